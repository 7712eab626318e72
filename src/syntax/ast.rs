//! The abstract syntax tree of a `.loss` file. Every node carries the byte span it came from,
//! so later stages can point diagnostics at the source. Nothing here knows about ops or shapes.

use crate::syntax::diag::FileId;

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, Default)]
pub struct File {
    pub uses: Vec<Ident>,
    pub fns: Vec<FnDef>,
    pub losses: Vec<LossDef>,
}

#[derive(Clone, Debug)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Body,
}

/// Statements followed by the returned expression.
#[derive(Clone, Debug)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub result: Expr,
}

/// A statement of a body.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// `let name = expr`: binds a new name.
    Let(Ident, Expr),
    /// `name = expr`: rebinds a name already bound.
    Assign(Ident, Expr),
    /// `for var in lo..hi { body }` (`..=`: hi included): the body repeated at compile time.
    For(Box<Loop>),
}

/// A compile-time loop: its variable, bounds and body.
#[derive(Clone, Debug)]
pub struct Loop {
    pub var: Ident,
    pub lo: Expr,
    pub hi: Expr,
    pub inclusive: bool,
    pub body: Vec<Stmt>,
    /// The whole `for` statement.
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct LossDef {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub params: Vec<ParamDecl>,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub struct AxisDecl {
    pub name: Ident,
    /// `..S`: binds any number of trailing (spatial) dimensions.
    pub pack: bool,
}

#[derive(Clone, Debug)]
pub struct InputDecl {
    pub name: Ident,
    pub shape: Vec<AxisDecl>,
    pub diff: bool,
    /// `= 1`: the input is optional and defaults to this constant.
    pub default: Option<f64>,
    /// `in [lo, hi]` / `in int [lo, hi]`: the values the input takes.
    pub range: Option<ValueRange>,
    /// `labels(axis, ignore_param)`: the input may be given as class indices without `axis`.
    pub labels: Option<(Ident, Ident)>,
}

/// The declared values of an input: a closed interval, of integers with `int`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueRange {
    pub lo: f64,
    pub hi: f64,
    pub int: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Number,
    Int,
    Enum(Vec<String>),
    /// One number per element of the named axis (`param weight: [C] = 1`).
    Vector(Ident),
}

#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: ParamType,
    pub default: Expr,
    /// `in [lo, hi]`: the values it may be set to (every element, for a vector parameter).
    pub range: Option<ValueRange>,
    /// `= [1, 2, 5]`: a list default (vector parameters), with `default` its span as a number.
    pub list_default: Option<Vec<f64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    /// How the operator is written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
            BinOp::Gt => ">",
            BinOp::Lt => "<",
            BinOp::Ge => ">=",
            BinOp::Le => "<=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&",
            BinOp::Or => "|",
        }
    }
}

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

impl UnOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Not => "!",
        }
    }
}

/// One link of an operator chain: `op rhs`, with the span of the operator and of the chain so
/// far (first operand to the end of `rhs`).
#[derive(Clone, Debug)]
pub struct Link {
    pub op: BinOp,
    pub rhs: Expr,
    pub span: Span,
}

/// One exponent of a power chain: its prefix operators (outermost first) and its operand.
#[derive(Clone, Debug)]
pub struct Exponent {
    pub prefix: Vec<(UnOp, Span)>,
    pub operand: Expr,
}

/// Expressions. Operator chains are flat (`a + b - c` is one [`ExprKind::Chain`], `---x` one
/// [`ExprKind::Prefix`], `a ^ b ^ c` one [`ExprKind::Power`]), so the tree's depth grows only
/// with brackets and calls, which the parser bounds: no stage recurses on a chain's length.
#[derive(Clone, Debug)]
pub enum ExprKind {
    Number(f64),
    Name(String),
    AxisList(Vec<Ident>),
    /// Prefix operators (outermost first) applied to an operand.
    Prefix(Vec<(UnOp, Span)>, Box<Expr>),
    /// A left-associative chain: `first op1 rhs1 op2 rhs2 ...`.
    Chain(Box<Expr>, Vec<Link>),
    /// A right-associative power chain: `base ^ e1 ^ e2 ...` = `base ^ (e1 ^ (e2 ...))`.
    Power(Box<Expr>, Vec<Exponent>),
    Call {
        name: Ident,
        args: Vec<Expr>,
        kwargs: Vec<(Ident, Expr)>,
    },
    Match {
        scrutinee: Ident,
        arms: Vec<(Ident, Expr)>,
    },
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}
