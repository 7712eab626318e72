//! The op table: the only place an op is defined. Each entry gives the op's DSL name, arity,
//! class (which fixes its shape rule), differentiability, f64 and f32 elementwise kernels (one
//! body, instantiated at both precisions), its reverse-mode derivative rule (which emits ops of
//! this same table), the grid points its derivative is tested at, and its kink conventions.
//!
//! In: nothing. Out: [`Op`], [`OPS`], [`lookup`]. Never here: parsing, graph rewriting, buffers.
//! Adding an op adds one entry to `define_ops!` and nothing else: the front end resolves call
//! names against this table, and the per-op derivative and kernel tests iterate over it.

pub mod edt;
pub mod family;
pub mod fast;
pub mod math;
pub mod order;
pub mod window;

use crate::ir::graph::{Attr, Graph, Node, NodeId};

/// How an op's output axes follow from its arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Class {
    /// No arguments: constants, inputs, axis sizes.
    Leaf,
    /// Elementwise; arguments broadcast by axis name, the output has the union of their axes.
    Map,
    /// Folds the axes in `Attr::Axes` away with the kernel as combiner, starting from `init`.
    Reduce { init: f64 },
    /// Adds the axes in `Attr::Axes` (values repeat along them).
    Broadcast,
    /// Looks at neighbours within each image: argument 0 is read per image over the loss's
    /// spatial (pack) axis, whose dimensions the binding keeps; the output has argument 0's axes
    /// and always the pack axis. Arguments after `image_args` are compile-time constants
    /// (window size, sigma), described by the entry's [`Spatial`]. Kernels: [`window`] and
    /// [`edt`], one call per image.
    Window { image_args: usize },
    /// Sorts per group of the axes in `Attr::Axes` (its `over`; default all): argument 0 and
    /// the other image arguments are read per group, the output has their axes. Kernels:
    /// [`order`], one call per group.
    Order { image_args: usize },
}

impl Class {
    /// The number of image (tensor) arguments of a window or order op; its other arguments are
    /// compile-time constants. `None` for the other classes.
    pub fn image_args(self) -> Option<usize> {
        match self {
            Class::Window { image_args } | Class::Order { image_args } => Some(image_args),
            _ => None,
        }
    }
}

/// What a constant argument of a window or order op means. Bind time checks every one with
/// [`window::validate`] against the bound spatial sides, so kernels see valid values only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstArg {
    /// Taps of a centred window: an odd whole number from 1 to [`window::MAX_WINDOW`], at
    /// most every side of the image (of the box of the op's scale, if it has one).
    Window,
    /// A standard deviation: a finite positive number.
    Sigma,
    /// A pyramid scale: a whole number from 0 to [`window::MAX_SCALE`].
    Scale,
    /// A percentage: a number in [0, 100].
    Percent,
    /// A spatial axis: a whole number from 0 to the number of spatial axes minus one.
    Axis,
    /// An offset along a spatial axis: a whole number whose magnitude is below
    /// [`window::MAX_OFFSET`] (beyond the side every element comes from the padding).
    Offset,
}

impl ConstArg {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ConstArg::Window => "window",
            ConstArg::Sigma => "sigma",
            ConstArg::Scale => "scale",
            ConstArg::Percent => "percent",
            ConstArg::Axis => "axis",
            ConstArg::Offset => "offset",
        }
    }
}

/// One window op's image kernel: `(images, dims, consts, out)` for one image (each image and
/// `out` row-major over `dims`), the constants already validated.
pub type ImageKernel = fn(&[&[f64]], &[usize], &[f64], &mut [f64]);
/// One order op's kernel for one group: `(the image arguments' group members in row-major
/// order, consts, out)`.
pub type GroupKernel = fn(&[&[f64]], &[f64], &mut [f64]);

/// The kernel of a window or order op.
#[derive(Clone, Copy)]
pub enum SpatialKernel {
    /// Per image, in f64 (the executors convert the loss's element type around it).
    Image(ImageKernel),
    /// Per batch in the loss's own element type (images back to back; the distance
    /// transforms compute in f64 inside and round once, so both give the same result).
    Typed {
        f64: fn(&[f64], &[usize], &mut [f64]),
        f32: fn(&[f32], &[usize], &mut [f32]),
    },
    /// Per group of the op's `over` axes (order ops).
    Group(GroupKernel),
}

/// The table entry's part for a window or order op: what its constants mean, constants its
/// generated tests use, and its kernel.
#[derive(Clone, Copy)]
pub struct Spatial {
    pub consts: &'static [ConstArg],
    /// Valid constants for the generated tests (one per entry of `consts`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub sample: &'static [f64],
    pub kernel: SpatialKernel,
}

/// Differentiability kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Diff {
    /// Has a derivative (possibly with documented kinks).
    Smooth,
    /// Piecewise constant: derivative zero where defined; the output is data.
    PiecewiseConstant,
    /// Not differentiated through (comparisons, `stop_grad`): the output is data.
    None,
}

/// Reverse-mode rule: given the node, its output id, the incoming adjoint `g` and which
/// arguments need a gradient, returns the adjoint contribution for each argument.
pub type GradRule = fn(&mut Graph, &Node, NodeId, NodeId, &[bool]) -> Vec<Option<NodeId>>;

pub struct OpDef {
    pub op: Op,
    /// DSL / IR name. Names may repeat across arities (`max(a, b)` vs `max(x, over = ..)`).
    pub name: &'static str,
    pub arity: usize,
    pub class: Class,
    pub diff: Diff,
    pub f64: fn(&[f64]) -> f64,
    pub f32: fn(&[f32]) -> f32,
    pub grad: GradRule,
    /// Points (per argument) at which the derivative rule is checked against finite differences.
    #[cfg_attr(not(test), allow(dead_code))]
    pub grid: &'static [f64],
    /// Whether a user may call it by name (false for leaves and internal ops).
    pub callable: bool,
    /// Whether its two arguments commute exactly (the graph orders them, so CSE sees `a*b`
    /// and `b*a` as one node). `max`/`min` do not: their NaN and tie conventions are ordered.
    pub commutative: bool,
    /// The operator that writes it in source (`+`, `!`), if any: the front end resolves
    /// operators here, by symbol and arity.
    pub symbol: Option<&'static str>,
    /// Singular somewhere in its domain (`log 0`, `x/0`): the stabilise pass guards it where a
    /// `where` discards its value, so a discarded branch cannot leak NaN into a gradient.
    pub singular: bool,
    /// Its slot in the VM's stable-primitive family (`sigmoid`, `softplus`, `log_sigmoid` of
    /// one `x`, computed together by [`family`]'s kernels).
    pub family: Option<usize>,
    /// Argument positions that carry no derivative even though the op is smooth (`where`'s
    /// condition).
    pub data_args: &'static [usize],
    /// Its value depends on its arguments' shapes only, never on their values
    /// (`valid_window`): what depends on it does not depend on the data it is applied to.
    pub shape_only: bool,
    /// Window and order ops: constants and kernel (`None` for the other classes, whose
    /// kernels are the lane bodies below).
    pub spatial: Option<Spatial>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: &'static str,
}

/// The window op `op` with `n`'s constant window arguments after `image` arguments.
fn window_like(b: &mut Graph, op: Op, image: Vec<NodeId>, n: &Node, skip: usize) -> NodeId {
    let mut args = image;
    args.extend_from_slice(&n.args[skip..]);
    b.add(op, args, Attr::None)
}

/// The derivative rule of a linear window op: its adjoint op `$adj` applied to the incoming
/// adjoint, with the node's constant arguments (the filter's is its adjoint and the adjoint's
/// the filter; likewise for pooling). Naming the adjoint is part of the entry, so an op without
/// one does not compile.
macro_rules! adjoint {
    ($adj:ident) => {
        |b, n, _, g, _| {
            let mut d = vec![Some(window_like(b, Op::$adj, vec![g], n, 1))];
            d.resize(n.args.len(), None);
            d
        }
    };
}

fn no_grad(_: &mut Graph, n: &Node, _: NodeId, _: NodeId, _: &[bool]) -> Vec<Option<NodeId>> {
    vec![None; n.args.len()]
}

/// Derivative of `max`/`min` over axes: `g * [x == out] / #{x == out}` — the adjoint split
/// evenly among the elements that attain the extremum. Giving each tie the full adjoint would
/// be wrong wherever the ties are copies of one value (a value broadcast along the reduced
/// axes): `max(broadcast(v))` is `v`, with derivative 1, not the number of copies.
fn extremum_grad(
    b: &mut Graph,
    n: &Node,
    out: NodeId,
    g: NodeId,
    _: &[bool],
) -> Vec<Option<NodeId>> {
    let Attr::Axes(over) = n.attr else {
        unreachable!("a reduction carries its axes")
    };
    let m = b.op2(Op::Eq, n.args[0], out);
    let count = b.reduce(Op::Sum, m, over);
    let share = b.op2(Op::Div, g, count);
    let z = b.c(0.0);
    vec![Some(b.op3(Op::Where, m, share, z))]
}

/// `Some(e)` for a given optional table field, `None` for an absent one.
macro_rules! some_or_none {
    () => {
        None
    };
    ($e:expr) => {
        Some($e)
    };
}

/// A given optional slice field, or the empty slice.
macro_rules! or_empty {
    () => {
        &[]
    };
    ($e:expr) => {
        $e
    };
}

/// The f64 or f32 reference kernel of an entry: its `eval` body with libm math, or for an op
/// without one (window and order ops, whose kernels are their [`Spatial`]) NaN — never called,
/// since the executors dispatch those by class.
macro_rules! reference_fn {
    ($t:ty) => {{
        fn f(_: &[$t]) -> $t {
            <$t>::NAN
        }
        f
    }};
    ($t:ty, |$x:ident| $body:expr) => {{
        #[allow(unused_variables, unused_imports, clippy::float_cmp)]
        fn f($x: &[$t]) -> $t {
            use $crate::ops::math::reference::*;
            $body
        }
        f
    }};
}

/// One lane of an entry's `eval` body (NaN for an op without one, as [`reference_fn`]).
macro_rules! lane_body {
    ($a:ident, $b:ident, $c:ident, $nan:expr) => {
        $nan
    };
    ($a:ident, $b:ident, $c:ident, $nan:expr, |$x:ident| $body:expr) => {{
        let $x = [$a, $b, $c];
        $body
    }};
}

macro_rules! define_ops {
    ($( $v:ident { $name:literal, $arity:literal, $class:expr, $diff:ident, callable: $callable:literal,
        $(commutes: $commutes:literal,)? $(symbol: $sym:literal,)? $(singular: $sing:literal,)?
        $(family: $fam:literal,)? $(data_args: $da:expr,)? $(shape_only: $so:literal,)? $(spatial: $sp:expr,)?
        $(eval: |$x:ident| $body:expr,)? grad: $grad:expr, grid: $grid:expr, doc: $doc:literal } )*) => {
        /// Op identifiers, in table order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Op { $($v),* }

        pub static OPS: &[OpDef] = &[ $( OpDef {
            op: Op::$v, name: $name, arity: $arity, class: $class, diff: Diff::$diff,
            f64: reference_fn!(f64 $(, |$x| $body)?),
            f32: reference_fn!(f32 $(, |$x| $body)?),
            grad: $grad, grid: $grid, callable: $callable, commutative: false $(|| $commutes)?,
            symbol: some_or_none!($($sym)?),
            singular: false $(|| $sing)?,
            family: some_or_none!($($fam)?),
            data_args: or_empty!($($da)?),
            shape_only: false $(|| $so)?,
            spatial: some_or_none!($($sp)?),
            doc: $doc,
        } ),* ];

        /// The f32 kernel of every op for one lane, with the vectorisable math of `math::fast`.
        /// Arguments an op lacks are passed as its first argument. `#[inline(always)]`, so a
        /// caller with a literal `op` gets the body alone, compiled with the caller's target
        /// features: the block kernels below and the generated native kernels both call it,
        /// which is why they give the same bits.
        #[inline(always)]
        #[allow(unused_variables, unused_imports, clippy::float_cmp)]
        pub fn lane_kernel_f32<const FMA: bool>(op: Op, a: f32, b: f32, c: f32) -> f32 {
            if FMA {
                use $crate::ops::math::fast_fma::*;
                match op { $( Op::$v => lane_body!(a, b, c, f32::NAN $(, |$x| $body)?) ),* }
            } else {
                use $crate::ops::math::fast::*;
                match op { $( Op::$v => lane_body!(a, b, c, f32::NAN $(, |$x| $body)?) ),* }
            }
        }

        /// The f64 lane kernel of every op (as [`lane_kernel_f32`]).
        #[inline(always)]
        #[allow(unused_variables, unused_imports, clippy::float_cmp)]
        pub fn lane_kernel_f64<const FMA: bool>(op: Op, a: f64, b: f64, c: f64) -> f64 {
            if FMA {
                use $crate::ops::math::fast_fma::*;
                match op { $( Op::$v => lane_body!(a, b, c, f64::NAN $(, |$x| $body)?) ),* }
            } else {
                use $crate::ops::math::fast::*;
                match op { $( Op::$v => lane_body!(a, b, c, f64::NAN $(, |$x| $body)?) ),* }
            }
        }

        /// The f32 block kernel of every op: one loop over the block per op, each lane the
        /// op's [`lane_kernel_f32`].
        #[inline(always)]
        #[allow(clippy::needless_range_loop)]
        pub fn block_kernel_f32<const FMA: bool>(op: Op, out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
            let n = out.len();
            let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
            match op { $( Op::$v => for i in 0..n { out[i] = lane_kernel_f32::<FMA>(Op::$v, a[i], b[i], c[i]); } ),* }
        }

        /// The f64 block kernel of every op (as [`block_kernel_f32`]).
        #[inline(always)]
        #[allow(clippy::needless_range_loop)]
        pub fn block_kernel_f64<const FMA: bool>(op: Op, out: &mut [f64], a: &[f64], b: &[f64], c: &[f64]) {
            let n = out.len();
            let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
            match op { $( Op::$v => for i in 0..n { out[i] = lane_kernel_f64::<FMA>(Op::$v, a[i], b[i], c[i]); } ),* }
        }
    };
}

const GRID: &[f64] = &[-2.5, -0.7, 0.3, 1.9];
const POS: &[f64] = &[0.2, 0.9, 2.7];
const UNIT: &[f64] = &[-0.6, 0.1, 0.8];

define_ops! {
    // ---- leaves ------------------------------------------------------------------------
    Const { "const", 0, Class::Leaf, None, callable: false, eval: |x| 0.0, grad: no_grad, grid: &[],
        doc: "A constant (Attr::Const)." }
    Input { "input", 0, Class::Leaf, None, callable: false, eval: |x| 0.0, grad: no_grad, grid: &[],
        doc: "A loss input (Attr::Input)." }
    AxisSize { "axis_size", 0, Class::Leaf, None, callable: false, eval: |x| 0.0, grad: no_grad, grid: &[],
        doc: "The number of elements along the axes in Attr::Axes, bound at call time." }
    AxisIndex { "axis_index", 0, Class::Leaf, None, callable: false, eval: |x| 0.0, grad: no_grad, grid: &[],
        doc: "The coordinate 0, 1, .. along the one (non-pack) axis in Attr::Axes: data (`index([C])`)." }
    // ---- structure ---------------------------------------------------------------------
    Broadcast { "broadcast", 1, Class::Broadcast, Smooth, callable: false, eval: |x| x[0],
        grad: |_, _, _, g, _| vec![Some(g)], grid: &[],
        doc: "Repeats its argument along new axes; the adjoint is summed back by autodiff." }
    Sum { "sum", 1, Class::Reduce { init: 0.0 }, Smooth, callable: true, eval: |x| x[0] + x[1],
        grad: |_, _, _, g, _| vec![Some(g)], grid: &[],
        doc: "sum(x, over = [..]): sum over the named axes (all of x's axes without `over`)." }
    MaxOver { "max", 1, Class::Reduce { init: f64::NEG_INFINITY }, Smooth, callable: true, eval: |x| if x[1] > x[0] { x[1] } else { x[0] },
        grad: extremum_grad, grid: &[],
        doc: "max(x, over = [..]). Kink: tied maxima share the adjoint equally (as JAX and torch.amax), so copies of one value broadcast along the reduced axes get exactly its derivative." }
    MinOver { "min", 1, Class::Reduce { init: f64::INFINITY }, Smooth, callable: true, eval: |x| if x[1] < x[0] { x[1] } else { x[0] },
        grad: extremum_grad, grid: &[],
        doc: "min(x, over = [..]). Kink: tied minima share the adjoint equally (see `max`)." }
    // ---- arithmetic --------------------------------------------------------------------
    Neg { "neg", 1, Class::Map, Smooth, callable: true, symbol: "-", eval: |x| -x[0],
        grad: |b, _, _, g, _| vec![Some(b.op1(Op::Neg, g))], grid: GRID, doc: "-x" }
    Add { "add", 2, Class::Map, Smooth, callable: true, commutes: true, symbol: "+", eval: |x| x[0] + x[1],
        grad: |_, _, _, g, _| vec![Some(g), Some(g)], grid: GRID, doc: "a + b" }
    Sub { "sub", 2, Class::Map, Smooth, callable: true, symbol: "-", eval: |x| x[0] - x[1],
        grad: |b, _, _, g, _| vec![Some(g), Some(b.op1(Op::Neg, g))], grid: GRID, doc: "a - b" }
    Mul { "mul", 2, Class::Map, Smooth, callable: true, commutes: true, symbol: "*", eval: |x| x[0] * x[1],
        grad: |b, n, _, g, _| vec![Some(b.op2(Op::Mul, g, n.args[1])), Some(b.op2(Op::Mul, g, n.args[0]))], grid: GRID, doc: "a * b" }
    Div { "div", 2, Class::Map, Smooth, callable: true, symbol: "/", singular: true, eval: |x| x[0] / x[1],
        grad: |b, n, out, g, need| {
            let da = b.op2(Op::Div, g, n.args[1]);
            let db = if need[1] { let t = b.op2(Op::Mul, da, out); Some(b.op1(Op::Neg, t)) } else { None };
            vec![Some(da), db] },
        grid: POS, doc: "a / b" }
    SafeDiv { "safe_div", 2, Class::Map, Smooth, callable: true, eval: |x| if x[1] == 0.0 { 0.0 } else { x[0] / x[1] },
        grad: |b, n, out, g, need| {
            let da = b.op2(Op::SafeDiv, g, n.args[1]);
            let db = if need[1] { let t = b.op2(Op::Mul, g, out); let q = b.op2(Op::SafeDiv, t, n.args[1]); Some(b.op1(Op::Neg, q)) } else { None };
            vec![Some(da), db] },
        grid: POS, doc: "safe_div(a, b): a / b, and 0 where b = 0 (guarded division; the gradient is 0 there too)." }
    Pow { "pow", 2, Class::Map, Smooth, callable: true, symbol: "^", singular: true, eval: |x| powf(x[0], x[1]),
        grad: |b, n, out, g, need| {
            let (a, e) = (n.args[0], n.args[1]);
            let da = if need[0] { let one = b.c(1.0); let em1 = b.op2(Op::Sub, e, one); let p = b.op2(Op::Pow, a, em1); let t = b.op2(Op::Mul, e, p); Some(b.op2(Op::Mul, g, t)) } else { None };
            let de = if need[1] { let l = b.op1(Op::Log, a); let t = b.op2(Op::Mul, out, l); Some(b.op2(Op::Mul, g, t)) } else { None };
            vec![da, de] },
        grid: POS, doc: "a ^ b. Bases that can reach 0 under a fractional exponent should be clamped (stdlib: max(base, 1e-6))." }
    Max { "max", 2, Class::Map, Smooth, callable: true, eval: |x| if x[1] > x[0] { x[1] } else { x[0] },
        grad: |b, n, _, g, _| { let m = b.op2(Op::Ge, n.args[0], n.args[1]); let z = b.c(0.0); vec![Some(b.op3(Op::Where, m, g, z)), Some(b.op3(Op::Where, m, z, g))] },
        grid: GRID, doc: "max(a, b). Kink: at a = b the adjoint goes to a." }
    Min { "min", 2, Class::Map, Smooth, callable: true, eval: |x| if x[1] < x[0] { x[1] } else { x[0] },
        grad: |b, n, _, g, _| { let m = b.op2(Op::Le, n.args[0], n.args[1]); let z = b.c(0.0); vec![Some(b.op3(Op::Where, m, g, z)), Some(b.op3(Op::Where, m, z, g))] },
        grid: GRID, doc: "min(a, b). Kink: at a = b the adjoint goes to a." }
    // ---- fused arithmetic (formed for kernels: same roundings, fewer memory round trips) ----
    MulAdd { "mul_add", 3, Class::Map, Smooth, callable: false, eval: |x| x[0] * x[1] + x[2],
        grad: |b, n, _, g, _| vec![Some(b.op2(Op::Mul, g, n.args[1])), Some(b.op2(Op::Mul, g, n.args[0])), Some(g)],
        grid: GRID, doc: "a*b + c, rounded after the product and after the sum (not an FMA)" }
    MulSub { "mul_sub", 3, Class::Map, Smooth, callable: false, eval: |x| x[0] * x[1] - x[2],
        grad: |b, n, _, g, _| vec![Some(b.op2(Op::Mul, g, n.args[1])), Some(b.op2(Op::Mul, g, n.args[0])), Some(b.op1(Op::Neg, g))],
        grid: GRID, doc: "a*b - c, two roundings" }
    Mul3 { "mul3", 3, Class::Map, Smooth, callable: false, eval: |x| x[0] * x[1] * x[2],
        grad: |b, n, _, g, _| { let bc = b.op2(Op::Mul, n.args[1], n.args[2]); let ac = b.op2(Op::Mul, n.args[0], n.args[2]); let ab = b.op2(Op::Mul, n.args[0], n.args[1]); vec![Some(b.op2(Op::Mul, g, bc)), Some(b.op2(Op::Mul, g, ac)), Some(b.op2(Op::Mul, g, ab))] },
        grid: GRID, doc: "(a*b)*c, two roundings" }
    // ---- transcendental ----------------------------------------------------------------
    Exp { "exp", 1, Class::Map, Smooth, callable: true, eval: |x| exp(x[0]),
        grad: |b, _, out, g, _| vec![Some(b.op2(Op::Mul, g, out))], grid: GRID, doc: "exp(x)" }
    Log { "log", 1, Class::Map, Smooth, callable: true, singular: true, eval: |x| ln(x[0]),
        grad: |b, n, _, g, _| vec![Some(b.op2(Op::Div, g, n.args[0]))], grid: POS, doc: "natural log" }
    Log1p { "log1p", 1, Class::Map, Smooth, callable: true, singular: true, eval: |x| log1p(x[0]),
        grad: |b, n, _, g, _| { let one = b.c(1.0); let d = b.op2(Op::Add, one, n.args[0]); vec![Some(b.op2(Op::Div, g, d))] }, grid: POS, doc: "log(1 + x), accurate near 0" }
    Expm1 { "expm1", 1, Class::Map, Smooth, callable: true, eval: |x| expm1(x[0]),
        grad: |b, n, _, g, _| { let e = b.op1(Op::Exp, n.args[0]); vec![Some(b.op2(Op::Mul, g, e))] }, grid: GRID, doc: "exp(x) - 1, accurate near 0" }
    Sqrt { "sqrt", 1, Class::Map, Smooth, callable: true, singular: true, eval: |x| sqrt(x[0]),
        grad: |b, _, out, g, _| { let two = b.c(2.0); let d = b.op2(Op::Mul, two, out); vec![Some(b.op2(Op::Div, g, d))] }, grid: POS, doc: "square root" }
    Sigmoid { "sigmoid", 1, Class::Map, Smooth, callable: true, family: 0, eval: |x| sigmoid(x[0]),
        grad: |b, n, out, g, _| { let nx = b.op1(Op::Neg, n.args[0]); let q = b.op1(Op::Sigmoid, nx); let d = b.op2(Op::Mul, out, q); vec![Some(b.op2(Op::Mul, g, d))] },
        grid: GRID, doc: "1/(1 + exp(-x)); derivative sigmoid(x)*sigmoid(-x), exact when either factor is tiny" }
    LogSigmoid { "log_sigmoid", 1, Class::Map, Smooth, callable: true, family: 4, eval: |x| log_sigmoid(x[0]),
        grad: |b, n, _, g, _| { let nx = b.op1(Op::Neg, n.args[0]); let q = b.op1(Op::Sigmoid, nx); vec![Some(b.op2(Op::Mul, g, q))] },
        grid: GRID, doc: "log(sigmoid(x)) = -softplus(-x)" }
    Softplus { "softplus", 1, Class::Map, Smooth, callable: true, family: 2, eval: |x| softplus(x[0]),
        grad: |b, n, _, g, _| { let q = b.op1(Op::Sigmoid, n.args[0]); vec![Some(b.op2(Op::Mul, g, q))] },
        grid: GRID, doc: "log(1 + exp(x)), exact for every x" }
    Tanh { "tanh", 1, Class::Map, Smooth, callable: true, eval: |x| tanh(x[0]),
        grad: |b, _, out, g, _| { let sq = b.op2(Op::Mul, out, out); let one = b.c(1.0); let d = b.op2(Op::Sub, one, sq); vec![Some(b.op2(Op::Mul, g, d))] }, grid: GRID, doc: "tanh(x)" }
    Cosh { "cosh", 1, Class::Map, Smooth, callable: true, eval: |x| cosh(x[0]),
        grad: |b, n, _, g, _| { let s = b.op1(Op::Sinh, n.args[0]); vec![Some(b.op2(Op::Mul, g, s))] }, grid: GRID, doc: "cosh(x)" }
    Sinh { "sinh", 1, Class::Map, Smooth, callable: true, eval: |x| sinh(x[0]),
        grad: |b, n, _, g, _| { let s = b.op1(Op::Cosh, n.args[0]); vec![Some(b.op2(Op::Mul, g, s))] }, grid: GRID, doc: "sinh(x)" }
    Abs { "abs", 1, Class::Map, Smooth, callable: true, eval: |x| abs(x[0]),
        grad: |b, n, _, g, _| { let s = b.op1(Op::Sign, n.args[0]); vec![Some(b.op2(Op::Mul, g, s))] }, grid: GRID, doc: "|x|. Kink: abs'(0) = 0." }
    Relu { "relu", 1, Class::Map, Smooth, callable: true, eval: |x| if x[0] > 0.0 { x[0] } else { 0.0 },
        grad: |b, n, _, g, _| { let z = b.c(0.0); let m = b.op2(Op::Gt, n.args[0], z); vec![Some(b.op3(Op::Where, m, g, z))] }, grid: GRID, doc: "max(x, 0). Kink: relu'(0) = 0." }
    Xlogy { "xlogy", 2, Class::Map, Smooth, callable: true, eval: |x| if x[0] == 0.0 { 0.0 } else { x[0] * ln(x[1]) },
        grad: |b, n, _, g, need| {
            let dx = if need[0] { Some(b.op2(Op::Xlogy, g, n.args[1])) } else { None };
            let dy = if need[1] { let t = b.op2(Op::Mul, g, n.args[0]); Some(b.op2(Op::SafeDiv, t, n.args[1])) } else { None };
            vec![dx, dy] },
        grid: POS, doc: "x*log(y), and 0 where x = 0 (even for y = 0)" }
    StopGrad { "stop_grad", 1, Class::Map, None, callable: true, eval: |x| x[0], grad: no_grad, grid: &[],
        doc: "Identity whose output is treated as data: no gradient flows through it." }
    // ---- data (piecewise constant / comparisons) ---------------------------------------
    Sign { "sign", 1, Class::Map, PiecewiseConstant, callable: true, eval: |x| if x[0] > 0.0 { 1.0 } else if x[0] < 0.0 { -1.0 } else { 0.0 },
        grad: no_grad, grid: &[], doc: "-1, 0 or 1" }
    Gt { "gt", 2, Class::Map, None, callable: false, symbol: ">", eval: |x| truth(x[0] > x[1]), grad: no_grad, grid: UNIT, doc: "a > b as 0/1" }
    Lt { "lt", 2, Class::Map, None, callable: false, symbol: "<", eval: |x| truth(x[0] < x[1]), grad: no_grad, grid: UNIT, doc: "a < b as 0/1" }
    Ge { "ge", 2, Class::Map, None, callable: false, symbol: ">=", eval: |x| truth(x[0] >= x[1]), grad: no_grad, grid: UNIT, doc: "a >= b as 0/1" }
    Le { "le", 2, Class::Map, None, callable: false, symbol: "<=", eval: |x| truth(x[0] <= x[1]), grad: no_grad, grid: UNIT, doc: "a <= b as 0/1" }
    Eq { "eq", 2, Class::Map, None, callable: false, symbol: "==", eval: |x| truth(x[0] == x[1]), grad: no_grad, grid: UNIT, doc: "a == b as 0/1" }
    Ne { "ne", 2, Class::Map, None, callable: false, symbol: "!=", eval: |x| truth(x[0] != x[1]), grad: no_grad, grid: UNIT, doc: "a != b as 0/1" }
    And { "and", 2, Class::Map, None, callable: false, symbol: "&", eval: |x| truth(nonzero(x[0]) && nonzero(x[1])), grad: no_grad, grid: UNIT, doc: "a & b (nonzero is true)" }
    Or { "or", 2, Class::Map, None, callable: false, symbol: "|", eval: |x| truth(nonzero(x[0]) || nonzero(x[1])), grad: no_grad, grid: UNIT, doc: "a | b (nonzero is true)" }
    Not { "not", 1, Class::Map, None, callable: false, symbol: "!", eval: |x| truth(!nonzero(x[0])), grad: no_grad, grid: UNIT, doc: "!a (nonzero is true)" }
    // ---- window (per image over the spatial pack axis; see `Class::Window`) ------------
    GaussianFilter { "gaussian_filter", 3, Class::Window { image_args: 1 }, Smooth, callable: true, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Window, ConstArg::Sigma], sample: &[3.0, 1.5], kernel: SpatialKernel::Image(window::gaussian_filter) },
        grad: adjoint!(GaussianFilterT), grid: &[],
        doc: "gaussian_filter(x, window, sigma): the separable normalised Gaussian of `window` taps (odd) and standard deviation `sigma` along every spatial axis, zero \"same\" padding (the output keeps x's shape). window and sigma are compile-time constants; a spatial side smaller than the window is a bind-time error." }
    GaussianFilterT { "gaussian_filter_adjoint", 3, Class::Window { image_args: 1 }, Smooth, callable: false, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Window, ConstArg::Sigma], sample: &[3.0, 1.5], kernel: SpatialKernel::Image(window::gaussian_filter_adjoint) },
        grad: adjoint!(GaussianFilter), grid: &[],
        doc: "The adjoint of gaussian_filter (its derivative's transpose): the gradient it passes back." }
    ValidWindow { "valid_window", 2, Class::Window { image_args: 1 }, None, callable: true, data_args: &[1], shape_only: true, spatial: Spatial { consts: &[ConstArg::Window], sample: &[3.0], kernel: SpatialKernel::Image(window::valid_window) },
        grad: no_grad, grid: &[],
        doc: "valid_window(x, window): 1 where a centred window of `window` taps (odd) fits inside the image along every spatial axis, else 0 — the positions of VALID padding in a \"same\"-padded filter's output. Data; a side smaller than the window is a bind-time error." }
    GaussianFilterAt { "gaussian_filter", 4, Class::Window { image_args: 1 }, Smooth, callable: true, data_args: &[1, 2, 3], spatial: Spatial { consts: &[ConstArg::Window, ConstArg::Sigma, ConstArg::Scale], sample: &[3.0, 1.5, 1.0], kernel: SpatialKernel::Image(window::gaussian_filter_at) },
        grad: adjoint!(GaussianFilterAtT), grid: &[],
        doc: "gaussian_filter(x, window, sigma, scale): gaussian_filter on the image of scale `scale` (see avg_pool2: the top-left box of ceil(side / 2^scale) elements per axis), zero outside that box. A box side smaller than the window is a bind-time error." }
    GaussianFilterAtT { "gaussian_filter_adjoint", 4, Class::Window { image_args: 1 }, Smooth, callable: false, data_args: &[1, 2, 3], spatial: Spatial { consts: &[ConstArg::Window, ConstArg::Sigma, ConstArg::Scale], sample: &[3.0, 1.5, 1.0], kernel: SpatialKernel::Image(window::gaussian_filter_at_adjoint) },
        grad: adjoint!(GaussianFilterAt), grid: &[],
        doc: "The adjoint of gaussian_filter(x, window, sigma, scale)." }
    ValidWindowAt { "valid_window", 3, Class::Window { image_args: 1 }, None, callable: true, data_args: &[1, 2], shape_only: true, spatial: Spatial { consts: &[ConstArg::Window, ConstArg::Scale], sample: &[3.0, 1.0], kernel: SpatialKernel::Image(window::valid_window_at) },
        grad: no_grad, grid: &[],
        doc: "valid_window(x, window, scale): valid_window on the image of scale `scale` (its box; 0 outside it). Data." }
    AvgPool2 { "avg_pool2", 2, Class::Window { image_args: 1 }, Smooth, callable: true, data_args: &[1], spatial: Spatial { consts: &[ConstArg::Scale], sample: &[0.0], kernel: SpatialKernel::Image(window::avg_pool2_at) },
        grad: adjoint!(AvgPool2T), grid: &[],
        doc: "avg_pool2(x, scale): the next scale of a multi-scale pyramid. The image of scale s is the top-left box of ceil(side / 2^s) elements per axis (scale 0: the whole image); this pools that box by 2x2 (2x2x2) averages with stride 2, an odd side first extended by repeating its last row / column / slice (TensorFlow's ssim_multiscale), into the box of scale s + 1, and is zero elsewhere: every scale keeps the tensor's shape. scale is a compile-time whole number." }
    AvgPool2T { "avg_pool2_adjoint", 2, Class::Window { image_args: 1 }, Smooth, callable: false, data_args: &[1], spatial: Spatial { consts: &[ConstArg::Scale], sample: &[0.0], kernel: SpatialKernel::Image(window::avg_pool2_at_adjoint) },
        grad: adjoint!(AvgPool2), grid: &[],
        doc: "The adjoint of avg_pool2(x, scale): the gradient on the box of scale s + 1 spread back over the box of scale s." }
    MaxPool3 { "max_pool3", 1, Class::Window { image_args: 1 }, Smooth, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::max_pool3_kernel) },
        grad: |b, n, _, g, _| vec![Some(b.add(Op::MaxPool3T, vec![g, n.args[0]], Attr::None))], grid: &[],
        doc: "max_pool3(x): sliding 3x3 (3x3x3) maximum, stride 1, same size, outside the image ignored. Kink: the adjoint goes to the first maximal element in row-major window order." }
    MinPool3 { "min_pool3", 1, Class::Window { image_args: 1 }, Smooth, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::min_pool3_kernel) },
        grad: |b, n, _, g, _| vec![Some(b.add(Op::MinPool3T, vec![g, n.args[0]], Attr::None))], grid: &[],
        doc: "min_pool3(x): sliding 3x3 (3x3x3) minimum (as max_pool3)." }
    MaxPool3T { "max_pool3_adjoint", 2, Class::Window { image_args: 2 }, None, callable: false, data_args: &[1], spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::max_pool3_adjoint) },
        grad: no_grad, grid: &[], doc: "max_pool3_adjoint(g, x): g scattered to the element each window took its maximum from." }
    MinPool3T { "min_pool3_adjoint", 2, Class::Window { image_args: 2 }, None, callable: false, data_args: &[1], spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::min_pool3_adjoint) },
        grad: no_grad, grid: &[], doc: "min_pool3_adjoint(g, x): as max_pool3_adjoint, for the minimum." }
    CrossMin3 { "cross_min3", 1, Class::Window { image_args: 1 }, Smooth, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::cross_min3_kernel) },
        grad: |b, n, _, g, _| vec![Some(b.add(Op::CrossMin3T, vec![g, n.args[0]], Attr::None))], grid: &[],
        doc: "cross_min3(x): the minimum over each element and its 2k axis neighbours (a cross; = the elementwise min of the 3x1 and 1x3 min pools, 3-D: 3x1x1, 1x3x1, 1x1x3), stride 1, outside the image ignored: a soft erosion. Kink: the adjoint goes to the first minimal element in row-major window order." }
    CrossMin3T { "cross_min3_adjoint", 2, Class::Window { image_args: 2 }, None, callable: false, data_args: &[1], spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::cross_min3_adjoint) },
        grad: no_grad, grid: &[], doc: "cross_min3_adjoint(g, x): g scattered to the element each cross took its minimum from." }
    CrossMean3 { "cross_mean3", 1, Class::Window { image_args: 1 }, Smooth, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::cross_mean3_kernel) },
        grad: |b, _, _, g, _| vec![Some(b.op1(Op::CrossMean3, g))], grid: &[],
        doc: "cross_mean3(x): (x + the sum of its 2k axis neighbours) / (2k + 1), zero outside the image (the 3x3 cross x 0.2 of kornia's HausdorffERLoss; 3-D: 7 taps x 1/7). Symmetric with zero padding, so it is its own adjoint." }
    Edt { "edt", 1, Class::Window { image_args: 1 }, None, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Typed { f64: edt::edt_unit::<f64>, f32: edt::edt_unit::<f32> } }, grad: no_grad, grid: &[],
        doc: "edt(m): exact Euclidean distance transform per image (scipy.ndimage.distance_transform_edt, unit spacing): each nonzero element gets the distance to the nearest zero element, zeros get 0; an image without a zero element is 0 everywhere. Data." }
    DistanceField { "distance_field", 1, Class::Window { image_args: 1 }, None, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Typed { f64: edt::field_unit::<f64>, f32: edt::field_unit::<f32> } }, grad: no_grad, grid: &[],
        doc: "distance_field(m): edt(m) + edt(!m) per image, each element's distance to the nearest element on the other side of the mask's border (nonzero is true); an image that is all true or all false is 0 everywhere. One transform for both sides. Data." }
    Erode { "erode", 1, Class::Window { image_args: 1 }, None, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::erode_kernel) }, grad: no_grad, grid: &[],
        doc: "erode(m): binary erosion by the full 3x3 (3x3x3) structuring element, outside the image counting as false (nonzero is true). Data." }
    Contour { "contour", 1, Class::Window { image_args: 1 }, None, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Image(window::contour_kernel) }, grad: no_grad, grid: &[],
        doc: "contour(m): m & !erode(m), the mask's elements on its border. Data." }
    Shift { "shift", 3, Class::Window { image_args: 1 }, Smooth, callable: true, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Axis, ConstArg::Offset], sample: &[1.0, 2.0], kernel: SpatialKernel::Image(window::shift) },
        grad: |b, n, _, g, _| { let back = b.op1(Op::Neg, n.args[2]); vec![Some(b.add(Op::Shift, vec![g, n.args[1], back], Attr::None)), None, None] }, grid: &[],
        doc: "shift(x, axis, k): x moved k elements along spatial axis `axis` (0 = the first spatial axis; k > 0 towards higher coordinates), zero where it comes from outside the image: y[.., p, ..] = x[.., p - k, ..]. Its adjoint is shift(g, axis, -k). axis and k are compile-time whole numbers." }
    ShiftEdge { "shift_edge", 3, Class::Window { image_args: 1 }, Smooth, callable: true, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Axis, ConstArg::Offset], sample: &[0.0, -2.0], kernel: SpatialKernel::Image(window::shift_edge) },
        grad: adjoint!(ShiftEdgeT), grid: &[],
        doc: "shift_edge(x, axis, k): as shift, but an element that comes from outside the image takes the nearest edge element (edge padding): y[.., p, ..] = x[.., clamp(p - k), ..]." }
    ShiftEdgeT { "shift_edge_adjoint", 3, Class::Window { image_args: 1 }, Smooth, callable: false, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Axis, ConstArg::Offset], sample: &[0.0, -2.0], kernel: SpatialKernel::Image(window::shift_edge_adjoint) },
        grad: adjoint!(ShiftEdge), grid: &[],
        doc: "The adjoint of shift_edge(x, axis, k): each element of g added to the element it was read from." }
    // ---- order statistics (per group of the axes in `over`; kernels in `order`) ------------
    LovaszWeights { "lovasz_weights", 2, Class::Order { image_args: 2 }, None, callable: true, spatial: Spatial { consts: &[], sample: &[], kernel: SpatialKernel::Group(order::lovasz_weights_group) }, grad: no_grad, grid: &[],
        doc: "lovasz_weights(e, y, over = [..]): per group of the axes in `over` (default: all), the errors e sorted descending (ties by position) and the Lovász weights g_k of the 0/1 labels y in that order (G = Σy, J_k = 1 - (G - cumsum(y)_k)/(G + cumsum(1 - y)_k), g_1 = J_1, g_k = J_k - J_(k-1)), each put back at its element's position: Σ relu(e) * lovasz_weights(e, y) is the Lovász extension of the Jaccard loss, and its gradient the one scattered back through the permutation. Data." }
    TopK { "top_k", 3, Class::Order { image_args: 2 }, None, callable: true, data_args: &[1, 2], spatial: Spatial { consts: &[ConstArg::Percent], sample: &[30.0], kernel: SpatialKernel::Group(order::top_k_group) }, grad: no_grad, grid: &[],
        doc: "top_k(x, m, percent, over = [..]): per group of the axes in `over` (default: all), among the n elements where m is nonzero (a mask; pass 1 for all), 1 at the max(1, floor(n * percent / 100)) largest x (ties by position; none if n = 0), else 0. percent is a compile-time constant. Data." }
    Where { "where", 3, Class::Map, Smooth, callable: true, data_args: &[0], eval: |x| if x[0] != 0.0 { x[1] } else { x[2] },
        grad: |b, n, _, g, _| { let z = b.c(0.0); let c = n.args[0]; vec![None, Some(b.op3(Op::Where, c, g, z)), Some(b.op3(Op::Where, c, z, g))] },
        grid: GRID, doc: "where(c, a, b): a where c is nonzero, else b. c is data; singular ops under a discarded branch are guarded by the stabilise pass." }
}

impl Op {
    pub fn def(self) -> &'static OpDef {
        &OPS[self as usize]
    }
    pub fn name(self) -> &'static str {
        self.def().name
    }
    /// Which argument positions carry a derivative.
    pub fn differentiable_arg(self, i: usize) -> bool {
        match self.def().diff {
            Diff::Smooth => !self.def().data_args.contains(&i),
            Diff::PiecewiseConstant | Diff::None => false,
        }
    }
}

/// Resolves a callable name and arity to an op: `max(a, b)` is elementwise, `max(x)` and
/// `max(x, over = ..)` reduce.
pub fn lookup(name: &str, arity: usize) -> Option<Op> {
    OPS.iter()
        .find(|d| d.callable && d.name == name && d.arity == arity)
        .map(|d| d.op)
}

/// The op an operator symbol writes with `arity` operands (`-` is `neg` or `sub`).
pub fn by_symbol(symbol: &str, arity: usize) -> Option<Op> {
    OPS.iter()
        .find(|d| d.symbol == Some(symbol) && d.arity == arity)
        .map(|d| d.op)
}

/// Every callable name, for "did you mean" suggestions.
pub fn callable_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().filter(|d| d.callable).map(|d| d.name)
}

/// The arities a callable name accepts.
pub fn arities(name: &str) -> Vec<usize> {
    OPS.iter()
        .filter(|d| d.callable && d.name == name)
        .map(|d| d.arity)
        .collect()
}

/// Constant value of a node, if it is a constant.
pub fn const_value(n: &Node) -> Option<f64> {
    match (n.op, n.attr) {
        (Op::Const, Attr::Const(bits)) => Some(f64::from_bits(bits)),
        _ => None,
    }
}

#[cfg(test)]
mod fast_tests;
#[cfg(test)]
mod tests;
