//! Window kernels of the planned spatial ops (issue 10): the separable normalised Gaussian
//! filter with VALID or zero-"same" padding and its adjoint (the gradient of a filtered value
//! with respect to the filter's input); sliding 3 x 3 (x 3) max and min pooling, stride 1,
//! outside ignored, with a documented tie rule for the adjoint; 2 x 2 (x 2) average pooling with
//! stride 2 and edge replication for odd sides, with its adjoint; and binary erosion with a full
//! structuring element (outside the image counts as false) with the contour `m & !erode(m)`.
//!
//! Arrays are row-major over `dims` (the spatial axes of one image); the caller runs one call per
//! image. Every output element is a fixed-order sum, so results do not depend on threads.
//!
//! In: an image, its dims, the window parameters. Out: the filtered image and its dims. Never
//! here: which axes are spatial, batching, graph nodes.

use rayon::prelude::*;

use crate::ir::graph::{Graph, Node};
use crate::ops::math::Real;
use crate::ops::{const_value, Class, ConstArg, ImageKernel, Op, Spatial, SpatialKernel};

/// A window or order op's number of image arguments and its constant arguments (window size,
/// sigma), or `None` for an op of another class. A constant argument that is not a constant
/// reads as NaN, which [`validate`] refuses.
pub fn window_args(g: &Graph, n: &Node) -> Option<(usize, Vec<f64>)> {
    let image_args = n.op.def().class.image_args()?;
    let consts = n.args[image_args..]
        .iter()
        .map(|&a| const_value(g.node(a)).unwrap_or(f64::NAN))
        .collect();
    Some((image_args, consts))
}

/// The axes an order op's groups span (its `over`), 0 for any other op.
pub fn group_axes(n: &Node) -> u16 {
    match (n.op.def().class, n.attr) {
        (Class::Order { .. }, crate::ir::graph::Attr::Axes(a)) => a,
        _ => 0,
    }
}

/// Deepest pyramid scale an op may name.
pub const MAX_SCALE: usize = 16;
/// Largest window an op may name (taps per axis).
pub const MAX_WINDOW: usize = 4095;
/// Offsets along an axis are below this in magnitude.
pub const MAX_OFFSET: usize = 1 << 20;

/// The pyramid scale among an op's constants (0 without one); valid after [`validate`].
fn scale(op: Op, consts: &[f64]) -> usize {
    spatial(op)
        .and_then(|sp| sp.consts.iter().position(|&c| c == ConstArg::Scale))
        .map_or(0, |i| consts[i] as usize)
}

fn spatial(op: Op) -> Option<&'static Spatial> {
    op.def().spatial.as_ref()
}

/// Checks a window or order op's constants against their meanings in its table entry and
/// the bound spatial sides `dims` (empty when the loss has none): `Err` says which argument
/// and why, for the caller to report with the loss. Every op's constants pass through here
/// when shapes bind, so kernels see valid values only.
pub fn validate(op: Op, consts: &[f64], dims: &[usize]) -> Result<(), String> {
    if matches!(op.def().class, Class::Window { .. }) && dims.is_empty() {
        return Err("it works over spatial axes, and these shapes have none (a `..S` pack bound to no axis)".into());
    }
    validate_consts(op, consts, Some(dims.len()))?;
    if let Some(sp) = spatial(op) {
        for (&kind, &x) in sp.consts.iter().zip(consts) {
            if kind == ConstArg::Window {
                window_taps(x, &scaled_dims(dims, scale(op, consts)))?;
            }
        }
    }
    Ok(())
}

/// The checks of [`validate`] that need no sides (the lowering reports them at the argument,
/// in the source): `rank` is the number of spatial axes where known.
pub fn validate_consts(op: Op, consts: &[f64], rank: Option<usize>) -> Result<(), String> {
    let Some(sp) = spatial(op) else {
        return Ok(());
    };
    if consts.len() != sp.consts.len() {
        return Err(format!(
            "it takes {} constant arguments, got {}",
            sp.consts.len(),
            consts.len()
        ));
    }
    let whole = |x: f64, lo: f64, hi: f64| x.fract() == 0.0 && lo <= x && x <= hi;
    let image_args = op.def().class.image_args().unwrap_or(0);
    for (k, (&kind, &x)) in sp.consts.iter().zip(consts).enumerate() {
        // Arguments are numbered from 1 in messages, images first.
        let arg = image_args + k + 1;
        let bad = |what: String| Err(format!("argument {arg} ({}) {what}, got {x}", kind.name()));
        match kind {
            ConstArg::Scale if !whole(x, 0.0, MAX_SCALE as f64) => {
                return bad(format!("must be a whole number from 0 to {MAX_SCALE}"))
            }
            ConstArg::Sigma if !(x.is_finite() && x > 0.0) => {
                return bad("must be a finite positive number".into())
            }
            ConstArg::Percent if !(0.0..=100.0).contains(&x) => {
                return bad("must be a percentage in [0, 100]".into())
            }
            ConstArg::Axis if !whole(x, 0.0, 15.0) => {
                return bad("must be a spatial axis: a whole number from 0".into())
            }
            ConstArg::Axis if rank.is_some_and(|r| x as usize >= r) => {
                return bad(format!(
                    "must be a spatial axis, and these shapes have {} spatial axes",
                    rank.unwrap_or(0)
                ))
            }
            ConstArg::Offset if !(x.fract() == 0.0 && x.abs() < MAX_OFFSET as f64) => {
                return bad(format!(
                    "must be a whole number of magnitude below {MAX_OFFSET}"
                ))
            }
            ConstArg::Window if !(whole(x, 1.0, MAX_WINDOW as f64) && x % 2.0 == 1.0) => {
                return bad(format!(
                    "must be an odd whole number from 1 to {MAX_WINDOW}"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The side every spatial axis needs for `op` with `consts` (its window at its scale: the
/// box of scale s must hold the window), 1 for ops that fit any side.
pub fn min_side(op: Op, consts: &[f64]) -> usize {
    let Some(sp) = spatial(op) else { return 1 };
    sp.consts
        .iter()
        .zip(consts)
        .filter(|(&k, _)| k == ConstArg::Window)
        .map(|(_, &w)| {
            let s = scale(op, consts).min(MAX_SCALE);
            // At scale s the box has ceil(side / 2^s) elements.
            ((w.clamp(1.0, MAX_WINDOW as f64) as usize - 1) << s) + 1
        })
        .max()
        .unwrap_or(1)
}

/// The box of scale `s` within an image of `dims`: `ceil(d / 2^s)` per axis.
pub fn scaled_dims(dims: &[usize], s: usize) -> Vec<usize> {
    dims.iter().map(|&d| d.div_ceil(1 << s)).collect()
}

/// The flat indices in an image of `dims` of the elements of its top-left box `sub`, in the
/// box's row-major order.
fn box_indices<'a>(dims: &'a [usize], sub: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    (0..sub.iter().product::<usize>()).map(move |mut f| {
        let mut idx = 0;
        let mut scale = 1;
        for a in (0..sub.len()).rev() {
            idx += (f % sub[a]) * scale;
            f /= sub[a];
            scale *= dims[a];
        }
        idx
    })
}

/// A kernel at a pyramid scale: `f(box of scale from, its dims)` gives the box of scale `to`,
/// written into the image's top-left corner, zero elsewhere.
fn at_scale(
    x: &[f64],
    dims: &[usize],
    (from, to): (usize, usize),
    out: &mut [f64],
    f: impl FnOnce(&[f64], &[usize]) -> Vec<f64>,
) {
    let (din, dout) = (scaled_dims(dims, from), scaled_dims(dims, to));
    let sub: Vec<f64> = box_indices(dims, &din).map(|i| x[i]).collect();
    let y = f(&sub, &din);
    out.fill(0.0);
    for (i, v) in box_indices(dims, &dout).zip(y) {
        out[i] = v;
    }
}

/// Runs a window or order op on whole tensors (`images[k]` and `out` row-major over the axis
/// `sizes`, 1 for an axis the node lacks): order ops per group of the axes in `over`, the
/// others per image over the spatial `dims`, by the kernel of the op's table entry. The one
/// dispatch of the reference interpreter and the staged executor. The constants were checked
/// by [`validate`] when shapes bound.
pub fn run(
    op: Op,
    over: u16,
    images: &[&[f64]],
    sizes: &[usize],
    dims: &[usize],
    consts: &[f64],
    out: &mut [f64],
) {
    match spatial(op).map(|sp| sp.kernel) {
        Some(SpatialKernel::Typed { f64: k, .. }) => k(images[0], dims, out),
        Some(SpatialKernel::Group(k)) => {
            crate::ops::order::per_group(k, images, sizes, over, consts, out)
        }
        Some(SpatialKernel::Image(k)) => per_image(k, images, dims, consts, out),
        None => out.fill(f64::NAN),
    }
}

/// Runs `op` over the batch in the loss's element type and returns true where its kernel
/// works on that type itself (the distance transforms: no f64 copies of argument and result),
/// or returns false (the caller converts and calls [`run`]).
pub fn run_typed<T: Real>(op: Op, images: &[&[T]], dims: &[usize], out: &mut [T]) -> bool {
    match spatial(op).map(|sp| sp.kernel) {
        Some(SpatialKernel::Typed { f64, f32 }) => {
            T::typed_kernel((f64, f32), images[0], dims, out);
            true
        }
        _ => false,
    }
}

/// An image kernel over a batch: `images[k]` and `out` hold whole images of `dims` back to
/// back; images run in parallel, each on one thread (so the result does not depend on threads).
fn per_image(k: ImageKernel, images: &[&[f64]], dims: &[usize], consts: &[f64], out: &mut [f64]) {
    let per: usize = dims.iter().product::<usize>().max(1);
    out.par_chunks_mut(per).enumerate().for_each(|(b, o)| {
        let mut imgs: [&[f64]; 2] = [&[], &[]];
        for (d, x) in imgs.iter_mut().zip(images) {
            *d = &x[b * per..(b + 1) * per];
        }
        k(&imgs[..images.len()], dims, consts, o)
    })
}

// ---- the image kernels of the table's window ops (constants validated) ----------------------

pub fn gaussian_filter(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    let w = gaussian_weights(c[0] as usize, c[1]);
    out.copy_from_slice(&filter(x[0], dims, &w, Padding::Same).0);
}

pub fn gaussian_filter_adjoint(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    let w = gaussian_weights(c[0] as usize, c[1]);
    out.copy_from_slice(&filter_adjoint(x[0], dims, &w, Padding::Same));
}

pub fn valid_window(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    let half = (c[0] as usize - 1) / 2;
    let st = strides(dims);
    for (i, o) in out.iter_mut().enumerate().take(x[0].len()) {
        let inside = (0..dims.len()).all(|a| {
            let p = (i / st[a]) % dims[a];
            p >= half && p + half < dims[a]
        });
        *o = f64::from(u8::from(inside));
    }
}

/// A same-scale kernel applied to the box of the scale in `c[at]`.
fn on_box(k: ImageKernel, x: &[&[f64]], dims: &[usize], c: &[f64], at: usize, out: &mut [f64]) {
    let s = c[at] as usize;
    at_scale(x[0], dims, (s, s), out, |sub, din| {
        let mut y = vec![0.0; sub.len()];
        k(&[sub], din, c, &mut y);
        y
    })
}

pub fn gaussian_filter_at(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    on_box(gaussian_filter, x, dims, c, 2, out)
}

pub fn gaussian_filter_at_adjoint(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    on_box(gaussian_filter_adjoint, x, dims, c, 2, out)
}

pub fn valid_window_at(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    on_box(valid_window, x, dims, c, 1, out)
}

pub fn avg_pool2_at(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    let s = c[0] as usize;
    at_scale(x[0], dims, (s, s + 1), out, |sub, din| {
        avg_pool2(sub, din).0
    })
}

pub fn avg_pool2_at_adjoint(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    let s = c[0] as usize;
    at_scale(x[0], dims, (s + 1, s), out, |sub, _| {
        avg_pool2_adjoint(sub, &scaled_dims(dims, s))
    })
}

pub fn max_pool3_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&max_pool3(x[0], dims).0)
}

pub fn min_pool3_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&min_pool3(x[0], dims).0)
}

/// `max_pool3_adjoint(g, x)`: `g` scattered to each window's (first) maximum of `x`.
pub fn max_pool3_adjoint(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&pool_adjoint(x[0], &max_pool3(x[1], dims).1, x[0].len()))
}

pub fn min_pool3_adjoint(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&pool_adjoint(x[0], &min_pool3(x[1], dims).1, x[0].len()))
}

pub fn cross_min3_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&cross_min3(x[0], dims).0)
}

pub fn cross_min3_adjoint(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&pool_adjoint(x[0], &cross_min3(x[1], dims).1, x[0].len()))
}

pub fn cross_mean3_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&cross_mean3(x[0], dims))
}

/// Along `axis` of `dims`: for every element `i`, the element it reads when shifted by `k`
/// (`None` outside the image under zero padding; clamped to the edge with `edge`).
fn shift_sources(
    dims: &[usize],
    axis: usize,
    k: i64,
    edge: bool,
) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
    let st = strides(dims);
    let (d, s) = (dims[axis] as i64, st[axis]);
    (0..dims.iter().product::<usize>()).map(move |i| {
        let p = ((i / s) % dims[axis]) as i64;
        let q = p - k;
        let q = if edge {
            Some(q.clamp(0, d - 1))
        } else {
            (0..d).contains(&q).then_some(q)
        };
        (i, q.map(|q| (i as i64 + (q - p) * s as i64) as usize))
    })
}

pub fn shift(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    for (i, src) in shift_sources(dims, c[0] as usize, c[1] as i64, false) {
        out[i] = src.map_or(0.0, |j| x[0][j]);
    }
}

pub fn shift_edge(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    for (i, src) in shift_sources(dims, c[0] as usize, c[1] as i64, true) {
        out[i] = src.map_or(0.0, |j| x[0][j]);
    }
}

/// Each element of the adjoint added, in index order, to the element `shift_edge` read it from.
pub fn shift_edge_adjoint(x: &[&[f64]], dims: &[usize], c: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    for (i, src) in shift_sources(dims, c[0] as usize, c[1] as i64, true) {
        if let Some(j) = src {
            out[j] += x[0][i];
        }
    }
}

pub fn erode_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&erode(x[0], dims))
}

pub fn contour_kernel(x: &[&[f64]], dims: &[usize], _: &[f64], out: &mut [f64]) {
    out.copy_from_slice(&contour(x[0], dims))
}

/// A window size argument: an odd whole number no larger than any side of `dims`.
pub fn window_taps(window: f64, dims: &[usize]) -> Result<usize, String> {
    if !(window >= 1.0 && window.fract() == 0.0 && window <= 1e6 && window % 2.0 == 1.0) {
        return Err(format!(
            "the window must be an odd whole number, got {window}"
        ));
    }
    let taps = window as usize;
    if let Some((a, &d)) = dims.iter().enumerate().find(|(_, &d)| d < taps) {
        return Err(format!(
            "spatial dimension {a} has {d} elements, fewer than the window of {taps}"
        ));
    }
    Ok(taps)
}

/// How a window treats the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Only windows that fit: each side shrinks by `window - 1`. Tested, not used by the op
    /// table: VALID positions are a same-padded filter masked by `valid_window`.
    #[cfg_attr(not(test), allow(dead_code))]
    Valid,
    /// Zero padding, same size out as in (odd windows only, centred).
    Same,
}

/// The normalised 1-D Gaussian of `window` taps and standard deviation `sigma`, centred.
pub fn gaussian_weights(window: usize, sigma: f64) -> Vec<f64> {
    let c = (window as f64 - 1.0) / 2.0;
    let w: Vec<f64> = (0..window)
        // The centre tap is 1 even where 2 sigma^2 underflows (-0 / 0 would be NaN).
        .map(|k| {
            if k as f64 == c {
                1.0
            } else {
                (-((k as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp()
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|v| v / total).collect()
}

/// The output dims of a window of `taps` over `dims` with `padding` (None if a side is smaller
/// than the window under VALID padding, or the window is even under SAME).
pub fn out_dims(dims: &[usize], taps: usize, padding: Padding) -> Option<Vec<usize>> {
    match padding {
        Padding::Valid => dims
            .iter()
            .map(|&d| d.checked_sub(taps - 1).filter(|&o| o > 0))
            .collect(),
        Padding::Same => (taps % 2 == 1).then(|| dims.to_vec()),
    }
}

/// Offset of tap 0 relative to the output position along an axis.
fn origin(taps: usize, padding: Padding) -> isize {
    match padding {
        Padding::Valid => 0,
        Padding::Same => -((taps as isize - 1) / 2),
    }
}

/// Visits every (output row, input row, weight) of a window of `taps` along `axis` of `dims`:
/// `visit(out_base, in_base, k)` with the row-major offsets of the two rows of `inner` elements
/// that tap `k` connects (taps falling outside the input are skipped: zero padding).
fn walk_axis(
    dims: &[usize],
    axis: usize,
    taps: usize,
    padding: Padding,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let n_out = out_dims(&dims[axis..=axis], taps, padding).expect("window fits")[0];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let n_in = dims[axis];
    let o = origin(taps, padding);
    for a in 0..outer {
        for i in 0..n_out {
            for k in 0..taps {
                let src = i as isize + k as isize + o;
                if (0..n_in as isize).contains(&src) {
                    visit(
                        (a * n_out + i) * inner,
                        (a * n_in + src as usize) * inner,
                        k,
                    );
                }
            }
        }
    }
}

/// `y = x` correlated with `w` along `axis` (`y[i] = Σ_k w[k] x[i + k + origin]`, zero outside).
/// Terms are added in tap order, along every axis (the innermost one by a gather per output).
fn filter_axis(
    x: &[f64],
    dims: &[usize],
    axis: usize,
    w: &[f64],
    padding: Padding,
) -> (Vec<f64>, Vec<usize>) {
    let mut od = dims.to_vec();
    od[axis] = out_dims(&dims[axis..=axis], w.len(), padding).expect("window fits")[0];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut y = vec![0.0; od.iter().product()];
    if inner == 1 {
        let (n_in, n_out, o) = (dims[axis], od[axis], origin(w.len(), padding));
        for (xr, yr) in x.chunks(n_in).zip(y.chunks_mut(n_out)) {
            // Tap by tap over the outputs it reaches (a contiguous, vectorised loop); each
            // output still adds its terms in tap order, from 0.
            for (k, &wk) in w.iter().enumerate() {
                let shift = k as isize + o; // input = output + shift
                let lo = (-shift).max(0) as usize;
                let hi = (n_in as isize - shift).clamp(0, n_out as isize) as usize;
                if lo >= hi {
                    continue;
                }
                let src = &xr[(lo as isize + shift) as usize..(hi as isize + shift) as usize];
                for (yi, &xv) in yr[lo..hi].iter_mut().zip(src) {
                    *yi += wk * xv;
                }
            }
        }
        return (y, od);
    }
    walk_axis(dims, axis, w.len(), padding, |yb, xb, k| {
        for j in 0..inner {
            y[yb + j] += w[k] * x[xb + j];
        }
    });
    (y, od)
}

/// The adjoint of [`filter_axis`]: `x̄[i + k + origin] += w[k] ȳ[i]`, back to `dims`.
fn filter_axis_adjoint(
    ybar: &[f64],
    dims: &[usize],
    axis: usize,
    w: &[f64],
    padding: Padding,
) -> Vec<f64> {
    let inner: usize = dims[axis + 1..].iter().product();
    let mut x = vec![0.0; dims.iter().product()];
    if inner == 1 {
        // Tap by tap, taps descending: each input element adds its terms in the order of the
        // outputs that reach it (ascending), as the general scatter does.
        let (n_in, o) = (dims[axis], origin(w.len(), padding));
        let n_out = out_dims(&dims[axis..=axis], w.len(), padding).expect("window fits")[0];
        for (yr, xr) in ybar.chunks(n_out).zip(x.chunks_mut(n_in)) {
            for (k, &wk) in w.iter().enumerate().rev() {
                let shift = k as isize + o; // input = output + shift
                let lo = (-shift).max(0) as usize;
                let hi = (n_in as isize - shift).clamp(0, n_out as isize) as usize;
                if lo >= hi {
                    continue;
                }
                let dst = &mut xr[(lo as isize + shift) as usize..(hi as isize + shift) as usize];
                for (xs, &yv) in dst.iter_mut().zip(&yr[lo..hi]) {
                    *xs += wk * yv;
                }
            }
        }
        return x;
    }
    walk_axis(dims, axis, w.len(), padding, |yb, xb, k| {
        for j in 0..inner {
            x[xb + j] += w[k] * ybar[yb + j];
        }
    });
    x
}

/// The separable filter with `w` along every axis of `dims`; returns the output and its dims.
pub fn filter(x: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> (Vec<f64>, Vec<usize>) {
    let (mut v, mut d) = (x.to_vec(), dims.to_vec());
    for axis in 0..dims.len() {
        let (nv, nd) = filter_axis(&v, &d, axis, w, padding);
        v = nv;
        d = nd;
    }
    (v, d)
}

/// The adjoint of [`filter`]: the gradient with respect to its input of `Σ ȳ · filter(x)`.
pub fn filter_adjoint(ybar: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> Vec<f64> {
    // The forward applies the axes in order 0, 1, ...; the adjoint undoes them in reverse, each
    // from the dims it was applied at.
    let mut stages = vec![dims.to_vec()];
    for axis in 0..dims.len() {
        let mut d = stages[axis].clone();
        d[axis] = out_dims(&d[axis..=axis], w.len(), padding).expect("window fits")[0];
        stages.push(d);
    }
    let mut g = ybar.to_vec();
    for axis in (0..dims.len()).rev() {
        g = filter_axis_adjoint(&g, &stages[axis], axis, w, padding);
    }
    g
}

/// Binary erosion of `mask` (nonzero is true) by the full 3^k structuring element, elements
/// outside the image counting as false: true where the element and all its neighbours are true.
///
/// The box is separable: a 3-wide "and" along each axis in turn (rows of `inner` elements
/// combined elementwise, so every step is a contiguous loop).
pub fn erode(mask: &[f64], dims: &[usize]) -> Vec<f64> {
    let mut cur: Vec<f64> = mask
        .iter()
        .map(|&m| f64::from(u8::from(m != 0.0)))
        .collect();
    let mut next = vec![0.0; cur.len()];
    for axis in 0..dims.len() {
        let len = dims[axis];
        let inner: usize = dims[axis + 1..].iter().product();
        for (src, dst) in cur.chunks(len * inner).zip(next.chunks_mut(len * inner)) {
            for i in 0..len {
                let row = &mut dst[i * inner..(i + 1) * inner];
                if i == 0 || i + 1 == len {
                    row.fill(0.0); // a neighbour outside the image is false
                    continue;
                }
                let (a, b, c) = (
                    &src[(i - 1) * inner..i * inner],
                    &src[i * inner..(i + 1) * inner],
                    &src[(i + 1) * inner..(i + 2) * inner],
                );
                for (((o, &x), &y), &z) in row.iter_mut().zip(a).zip(b).zip(c) {
                    *o = x * y * z; // 0/1 values: the product is the "and"
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    cur
}

/// The contour of a mask: its true elements that erosion removes (`m & !erode(m)`).
pub fn contour(mask: &[f64], dims: &[usize]) -> Vec<f64> {
    let e = erode(mask, dims);
    mask.iter()
        .zip(&e)
        .map(|(&m, &er)| f64::from(u8::from(m != 0.0 && er == 0.0)))
        .collect()
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        st[a] = st[a + 1] * dims[a + 1];
    }
    st
}

/// Visits the 3^k neighbourhood of element `i` (itself included) in row-major window order:
/// `visit(Some(j))` for a neighbour inside the image, `visit(None)` for one outside. With
/// `cross`, only the element and its 2k axis neighbours (offsets with one nonzero component).
fn neighbours3(
    dims: &[usize],
    st: &[usize],
    i: usize,
    cross: bool,
    mut visit: impl FnMut(Option<usize>),
) {
    let k = dims.len();
    let c: Vec<usize> = (0..k).map(|a| (i / st[a]) % dims[a]).collect();
    let mut off = vec![-1isize; k];
    loop {
        let inside = (0..k).all(|a| (0..dims[a] as isize).contains(&(c[a] as isize + off[a])));
        if !cross || off.iter().filter(|&&o| o != 0).count() <= 1 {
            visit(
                inside.then(|| {
                    (0..k).fold(i as isize, |acc, a| acc + off[a] * st[a] as isize) as usize
                }),
            );
        }
        // Next offset, last axis fastest; done after (1, 1, ..., 1).
        let mut a = k;
        loop {
            if a == 0 {
                return;
            }
            a -= 1;
            if off[a] < 1 {
                off[a] += 1;
                break;
            }
            off[a] = -1;
        }
    }
}

/// Visits every element of an image in row-major order with the flat indices of its in-image
/// 3^k neighbourhood (only its cross with `cross`) in row-major window order: by
/// [`each_window3`] for up to three axes, element by element with [`neighbours3`] beyond.
fn each_window(dims: &[usize], cross: bool, mut visit: impl FnMut(&[usize])) {
    if dims.len() <= 3 {
        return each_window3(dims, cross, |_, w| visit(w));
    }
    let st = strides(dims);
    let mut window = Vec::new();
    for i in 0..dims.iter().product() {
        window.clear();
        neighbours3(dims, &st, i, cross, |j| window.extend(j));
        visit(&window);
    }
}

/// Visits every element of an image of at most 3 `dims` in row-major order with the flat
/// indices of its in-image 3^k neighbourhood (only its cross with `cross`) in row-major window
/// order — the order [`neighbours3`] gives, without its per-element bookkeeping (missing
/// leading axes are treated as axes of one element, whose other offsets fall outside).
fn each_window3(dims: &[usize], cross: bool, mut visit: impl FnMut(usize, &[usize])) {
    let mut d = [1usize; 3];
    d[3 - dims.len()..].copy_from_slice(dims);
    let [n0, n1, n2] = d;
    // Per axis and coordinate, the in-image offsets among -1, 0, 1 (in that order).
    let span = |c: usize, n: usize| -> ([isize; 3], usize) {
        let mut o = [0isize; 3];
        let mut k = 0;
        for off in -1isize..=1 {
            let v = c as isize + off;
            if v >= 0 && v < n as isize {
                o[k] = off;
                k += 1;
            }
        }
        (o, k)
    };
    // Offsets a cross leaves out: more than one nonzero component.
    let off_cross = |o0: isize, o1: isize, o2: isize| {
        cross && u8::from(o0 != 0) + u8::from(o1 != 0) + u8::from(o2 != 0) > 1
    };
    // The window of an element away from every border: fixed offsets from its index.
    let mut rel = [0isize; 27];
    let mut rel_len = 0;
    for o0 in -1isize..=1 {
        for o1 in -1isize..=1 {
            for o2 in -1isize..=1 {
                let on = |o: isize, n: usize| o == 0 || n > 1;
                if !(on(o0, n0) && on(o1, n1) && on(o2, n2)) || off_cross(o0, o1, o2) {
                    continue;
                }
                rel[rel_len] = (o0 * n1 as isize + o1) * n2 as isize + o2;
                rel_len += 1;
            }
        }
    }
    // Interior along an axis: every offset an axis of more than one element has is inside.
    let interior = |c: usize, n: usize| n == 1 || (c > 0 && c + 1 < n);
    let mut window = [0usize; 27];
    let mut i = 0;
    for i0 in 0..n0 {
        let (a, ka) = span(i0, n0);
        for i1 in 0..n1 {
            let (b, kb) = span(i1, n1);
            for i2 in 0..n2 {
                if interior(i0, n0) && interior(i1, n1) && interior(i2, n2) {
                    for (w, &r) in window.iter_mut().zip(&rel[..rel_len]) {
                        *w = (i as isize + r) as usize;
                    }
                    visit(i, &window[..rel_len]);
                    i += 1;
                    continue;
                }
                let (c, kc) = span(i2, n2);
                let mut len = 0;
                for &o0 in &a[..ka] {
                    for &o1 in &b[..kb] {
                        for &o2 in &c[..kc] {
                            if off_cross(o0, o1, o2) {
                                continue;
                            }
                            let j0 = (i0 as isize + o0) as usize;
                            let j1 = (i1 as isize + o1) as usize;
                            let j2 = (i2 as isize + o2) as usize;
                            window[len] = (j0 * n1 + j1) * n2 + j2;
                            len += 1;
                        }
                    }
                }
                visit(i, &window[..len]);
                i += 1;
            }
        }
    }
}

/// For each element: the flat index of the largest element of its 3^k neighbourhood (stride 1,
/// outside the image ignored, i.e. -inf padding). **Tie rule**: the first maximal element in
/// row-major order of the window wins, and alone receives the adjoint; a NaN wins over numbers.
fn argmax3(
    x: &[f64],
    dims: &[usize],
    cross: bool,
    larger: impl Fn(f64, f64) -> bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(x.len());
    each_window(dims, cross, |window| {
        let mut best = usize::MAX;
        for &j in window {
            best = if best != usize::MAX
                && (!x[j].is_nan() || x[best].is_nan())
                && !larger(x[j], x[best])
            {
                best
            } else {
                j
            };
        }
        out.push(best);
    });
    out
}

/// Sliding 3 x 3 (x 3) max pooling, stride 1, same size (outside ignored), with the index each
/// output took its value from (for the adjoint: `x̄[arg[i]] += ȳ[i]`).
pub fn max_pool3(x: &[f64], dims: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let arg = argmax3(x, dims, false, |a, b| a > b);
    (arg.iter().map(|&j| x[j]).collect(), arg)
}

/// Sliding 3 x 3 (x 3) min pooling (as [`max_pool3`], the smallest element).
pub fn min_pool3(x: &[f64], dims: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let arg = argmax3(x, dims, false, |a, b| a < b);
    (arg.iter().map(|&j| x[j]).collect(), arg)
}

/// The minimum over each element's cross (itself and its 2k axis neighbours, outside
/// ignored), with the index it came from (tie rule as [`max_pool3`]).
pub fn cross_min3(x: &[f64], dims: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let arg = argmax3(x, dims, true, |a, b| a < b);
    (arg.iter().map(|&j| x[j]).collect(), arg)
}

/// The mean over each element's cross with zero padding: the sum of the element and its
/// neighbours inside the image (row-major window order), divided by 2k + 1.
pub fn cross_mean3(x: &[f64], dims: &[usize]) -> Vec<f64> {
    let scale = 1.0 / (2 * dims.len() + 1) as f64;
    let mut out = Vec::with_capacity(x.len());
    each_window(dims, true, |window| {
        let mut s = 0.0;
        for &j in window {
            s += x[j];
        }
        out.push(s * scale);
    });
    out
}

/// The adjoint of a pooling with the given argument indices.
pub fn pool_adjoint(ybar: &[f64], arg: &[usize], n_in: usize) -> Vec<f64> {
    let mut g = vec![0.0; n_in];
    for (&j, &v) in arg.iter().zip(ybar) {
        g[j] += v;
    }
    g
}

/// The output dims of [`avg_pool2`] (`ceil(d / 2)` each), and a visit of every (output, input)
/// pair its windows connect, in window order — an odd side's last element is read twice.
fn walk_avg2(dims: &[usize], mut visit: impl FnMut(usize, usize)) -> Vec<usize> {
    let od: Vec<usize> = dims.iter().map(|d| d.div_ceil(2)).collect();
    let (st, ost) = (strides(dims), strides(&od));
    let k = dims.len();
    for o in 0..od.iter().product() {
        let c: Vec<usize> = (0..k).map(|a| (o / ost[a]) % od[a]).collect();
        for t in 0..1usize << k {
            let idx: usize = (0..k)
                .map(|a| ((2 * c[a] + ((t >> (k - 1 - a)) & 1)).min(dims[a] - 1)) * st[a])
                .sum();
            visit(o, idx);
        }
    }
    od
}

/// 2 x 2 (x 2) average pooling with stride 2; an odd side is first extended by repeating its last
/// row / column / slice (TensorFlow's `ssim_multiscale` scales). Returns the output and its dims
/// (`ceil(d / 2)` each).
pub fn avg_pool2(x: &[f64], dims: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let scale = 1.0 / (1usize << dims.len()) as f64;
    let mut y = vec![0.0; dims.iter().map(|d| d.div_ceil(2)).product()];
    let od = walk_avg2(dims, |o, i| y[o] += x[i]);
    y.iter_mut().for_each(|v| *v *= scale);
    (y, od)
}

/// The adjoint of [`avg_pool2`]: each input element gets `ȳ / 2^k` per window tap that reads it
/// (twice for the last element of an odd side).
pub fn avg_pool2_adjoint(ybar: &[f64], dims: &[usize]) -> Vec<f64> {
    let scale = 1.0 / (1usize << dims.len()) as f64;
    let mut g = vec![0.0; dims.iter().product()];
    walk_avg2(dims, |o, i| g[i] += ybar[o] * scale);
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The n-D filter by its definition: the outer-product kernel applied directly.
    fn direct(x: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> (Vec<f64>, Vec<usize>) {
        let od = out_dims(dims, w.len(), padding).unwrap();
        let o = origin(w.len(), padding);
        let n_out: usize = od.iter().product();
        let k = dims.len();
        let unflat = |mut i: usize, d: &[usize]| {
            let mut c = vec![0usize; d.len()];
            for a in (0..d.len()).rev() {
                c[a] = i % d[a];
                i /= d[a];
            }
            c
        };
        let taps = w.len().pow(k as u32);
        let y = (0..n_out)
            .map(|f| {
                let p = unflat(f, &od);
                (0..taps)
                    .map(|t| {
                        let tk = unflat(t, &vec![w.len(); k]);
                        let mut idx = 0usize;
                        let mut weight = 1.0;
                        for a in 0..k {
                            let s = p[a] as isize + tk[a] as isize + o;
                            if s < 0 || s >= dims[a] as isize {
                                return 0.0;
                            }
                            idx = idx * dims[a] + s as usize;
                            weight *= w[tk[a]];
                        }
                        weight * x[idx]
                    })
                    .sum()
            })
            .collect();
        (y, od)
    }

    fn images() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, usize, f64, bool)> {
        (
            2usize..=3,
            prop::sample::select(vec![1usize, 3, 5]),
            0.5f64..2.0,
            any::<bool>(),
        )
            .prop_flat_map(|(k, taps, sigma, same)| {
                (
                    prop::collection::vec(taps..taps + 5, k),
                    Just(taps),
                    Just(sigma),
                    Just(same),
                )
            })
            .prop_flat_map(|(dims, taps, sigma, same)| {
                let n: usize = dims.iter().product();
                (
                    Just(dims),
                    prop::collection::vec(-2.0f64..2.0, n),
                    Just(taps),
                    Just(sigma),
                    Just(same),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
        /// The separable filter equals the direct n-D definition, VALID and SAME, 2-D and 3-D.
        #[test]
        fn separable_filter_equals_its_definition((dims, x, taps, sigma, same) in images()) {
            let w = gaussian_weights(taps, sigma);
            let pad = if same { Padding::Same } else { Padding::Valid };
            let (y, od) = filter(&x, &dims, &w, pad);
            let (z, zd) = direct(&x, &dims, &w, pad);
            prop_assert_eq!(&od, &zd);
            for (a, b) in y.iter().zip(&z) {
                prop_assert!((a - b).abs() <= 1e-13, "{a} vs {b}");
            }
        }

        /// The adjoint: <filter(x), ȳ> = <x, filter_adjoint(ȳ)> for random x and ȳ.
        #[test]
        fn adjoint_satisfies_the_inner_product_identity((dims, x, taps, sigma, same) in images(), seed in any::<u64>()) {
            let w = gaussian_weights(taps, sigma);
            let pad = if same { Padding::Same } else { Padding::Valid };
            let (y, od) = filter(&x, &dims, &w, pad);
            let m: usize = od.iter().product();
            let ybar: Vec<f64> = (0..m).map(|i| (((i as u64 ^ seed) % 97) as f64 / 48.0) - 1.0).collect();
            let lhs: f64 = y.iter().zip(&ybar).map(|(a, b)| a * b).sum();
            let g = filter_adjoint(&ybar, &dims, &w, pad);
            let rhs: f64 = x.iter().zip(&g).map(|(a, b)| a * b).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn gaussian_weights_are_normalised_and_symmetric() {
        let w = gaussian_weights(11, 1.5);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for k in 0..11 {
            assert_eq!(w[k].to_bits(), w[10 - k].to_bits());
        }
        assert!(
            out_dims(&[10, 12], 11, Padding::Valid).is_none(),
            "a side smaller than the window"
        );
        assert!(
            out_dims(&[10, 12], 4, Padding::Same).is_none(),
            "even window under SAME"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
        /// The separable erosion equals its definition (every element of the 3^k neighbourhood
        /// true, outside false) on random masks in 1-D, 2-D and 3-D.
        #[test]
        fn separable_erosion_equals_its_definition(
            (dims, m) in proptest::collection::vec(1usize..7, 1..4).prop_flat_map(|dims| {
                let n: usize = dims.iter().product();
                (Just(dims), proptest::collection::vec(proptest::bool::weighted(0.75), n))
            })
        ) {
            let mask: Vec<f64> = m.iter().map(|&b| f64::from(u8::from(b))).collect();
            let st = strides(&dims);
            let want: Vec<f64> = (0..mask.len())
                .map(|i| {
                    let mut all = true;
                    neighbours3(&dims, &st, i, false, |j| all &= j.is_some_and(|j| mask[j] != 0.0));
                    f64::from(u8::from(all))
                })
                .collect();
            prop_assert_eq!(erode(&mask, &dims), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
        /// The cross ops by their definitions on random images in 1-D, 2-D and 3-D:
        /// `cross_min3` is the elementwise min of the 3-wide min pools along each axis (as
        /// MONAI's soft_erode writes it) and takes its value from the element it names;
        /// `cross_mean3` sums the element and its in-image axis neighbours over 2k + 1, and is
        /// its own adjoint (<cross_mean3(x), y> = <x, cross_mean3(y)>).
        #[test]
        fn cross_ops_equal_their_definitions(
            (dims, x, y) in proptest::collection::vec(1usize..7, 1..4).prop_flat_map(|dims| {
                let n: usize = dims.iter().product();
                let v = || proptest::collection::vec(-10.0f64..10.0, n);
                (Just(dims), v(), v())
            })
        ) {
            let st = strides(&dims);
            let coord = |i: usize, a: usize| (i / st[a]) % dims[a];
            let axis_min = |i: usize, a: usize| {
                let c = coord(i, a);
                let mut m = x[i];
                if c > 0 { m = m.min(x[i - st[a]]); }
                if c + 1 < dims[a] { m = m.min(x[i + st[a]]); }
                m
            };
            let (got, arg) = cross_min3(&x, &dims);
            for i in 0..x.len() {
                let want = (0..dims.len()).map(|a| axis_min(i, a)).fold(f64::INFINITY, f64::min);
                prop_assert_eq!(got[i], want);
                prop_assert_eq!(x[arg[i]], want);
            }
            let k = 2 * dims.len() + 1;
            let m = cross_mean3(&x, &dims);
            for i in 0..x.len() {
                let mut s = x[i];
                for a in 0..dims.len() {
                    if coord(i, a) > 0 { s += x[i - st[a]]; }
                    if coord(i, a) + 1 < dims[a] { s += x[i + st[a]]; }
                }
                prop_assert!((m[i] - s / k as f64).abs() < 1e-12);
            }
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let (l, r) = (dot(&m, &y), dot(&x, &cross_mean3(&y, &dims)));
            prop_assert!((l - r).abs() <= 1e-9 * (1.0 + l.abs()), "{} vs {}", l, r);
        }
    }

    #[test]
    fn erosion_and_contour_of_a_square() {
        // A 4 x 4 square of true in a 6 x 7 image: erosion keeps its 2 x 2 inside; the contour
        // is the 12 border elements of the square.
        let dims = [6usize, 7];
        let mut m = vec![0.0; 42];
        for i in 1..5 {
            for j in 2..6 {
                m[i * 7 + j] = 1.0;
            }
        }
        let e = erode(&m, &dims);
        let inside: Vec<usize> = (0..42).filter(|&i| e[i] == 1.0).collect();
        assert_eq!(inside, vec![2 * 7 + 3, 2 * 7 + 4, 3 * 7 + 3, 3 * 7 + 4]);
        let c = contour(&m, &dims);
        assert_eq!(c.iter().filter(|&&v| v == 1.0).count(), 12);
        // Outside counts as false: a full image erodes to its interior only.
        let full = erode(&[1.0; 27], &[3, 3, 3]);
        assert_eq!(full.iter().filter(|&&v| v == 1.0).count(), 1);
        assert_eq!(full[13], 1.0);
    }

    #[test]
    fn max_and_min_pooling_and_the_tie_rule() {
        // 3 x 4: values chosen so every window's maximum is easy to read off.
        let dims = [3usize, 4];
        let x = [1.0, 5.0, 2.0, 0.0, 4.0, 3.0, 9.0, 1.0, 0.0, 7.0, 2.0, 8.0];
        let (y, arg) = max_pool3(&x, &dims);
        assert_eq!(
            y,
            vec![5.0, 9.0, 9.0, 9.0, 7.0, 9.0, 9.0, 9.0, 7.0, 9.0, 9.0, 9.0]
        );
        assert_eq!(arg[0], 1);
        let (m, _) = min_pool3(&x, &dims);
        assert_eq!(m[0], 1.0);
        assert_eq!(m[5], 0.0);
        // Ties: the first maximal element in row-major window order takes the whole adjoint.
        let t = [2.0, 2.0, 2.0, 2.0];
        let (_, arg) = max_pool3(&t, &[2, 2]);
        assert_eq!(arg, vec![0, 0, 0, 0]);
        let g = pool_adjoint(&[1.0; 4], &arg, 4);
        assert_eq!(g, vec![4.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn max_pooling_gradient_equals_finite_differences() {
        // Distinct values (no ties): the pooled sum is differentiable with the routed adjoint.
        let dims = [4usize, 3, 5];
        let n: usize = dims.iter().product();
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 61) as f64) / 7.0 + (i as f64) * 1e-3)
            .collect();
        let ybar: Vec<f64> = (0..n).map(|i| 1.0 + (i % 5) as f64).collect();
        let f = |x: &[f64]| {
            max_pool3(x, &dims)
                .0
                .iter()
                .zip(&ybar)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        };
        let (_, arg) = max_pool3(&x, &dims);
        let g = pool_adjoint(&ybar, &arg, n);
        for i in 0..n {
            let mut xp = x.clone();
            xp[i] += 1e-6;
            let mut xm = x.clone();
            xm[i] -= 1e-6;
            let fd = (f(&xp) - f(&xm)) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-6, "element {i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn average_pooling_replicates_odd_edges_and_has_its_adjoint() {
        // 3 x 3 -> 2 x 2; the last row and column repeat.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let (y, od) = avg_pool2(&x, &[3, 3]);
        assert_eq!(od, vec![2, 2]);
        assert_eq!(y, vec![3.0, 4.5, 7.5, 9.0]);
        // Inner-product identity on 3-D odd and even sides.
        let dims = [3usize, 4, 5];
        let n: usize = dims.iter().product();
        let x: Vec<f64> = (0..n).map(|i| ((i * 13 % 17) as f64) - 8.0).collect();
        let (y, od) = avg_pool2(&x, &dims);
        let m: usize = od.iter().product();
        let ybar: Vec<f64> = (0..m).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let lhs: f64 = y.iter().zip(&ybar).map(|(a, b)| a * b).sum();
        let g = avg_pool2_adjoint(&ybar, &dims);
        let rhs: f64 = x.iter().zip(&g).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    }
}
