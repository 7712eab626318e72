//! Parsing: source text in, [`File`] plus diagnostics out, using the pest grammar in
//! `grammar/loss.pest`. A syntax error does not end parsing: the file is re-parsed item by item
//! (`loss`, `fn`, `use` at the start of a line) so every broken item is reported and the good
//! ones still reach the checker. Never panics on any input text.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;

use crate::syntax::ast::*;
use crate::syntax::diag::{Code, Diagnostic, Diagnostics, FileId};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/loss.pest"]
struct LossParser;

/// The deepest nesting of brackets — `(`, `[` and `{` counted together — that a file may use.
/// Deeper text is refused (E0018) before it is parsed: the parser and the checker recurse once
/// per bracket, and this bound keeps them far from the end of any thread's stack (2 MiB is
/// enough, the default of spawned threads). Operator chains (`a + b + ...`, `---x`,
/// `a ^ b ^ ...`) do not nest and have no limit.
pub const MAX_NESTING: usize = 128;

/// The byte offset of the first bracket that opens deeper than [`MAX_NESTING`], if any.
fn too_deep(src: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut comment = false;
    for (i, b) in src.bytes().enumerate() {
        match b {
            b'\n' => comment = false,
            _ if comment => {}
            b'#' => comment = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Runs the pest parser on a fresh 8 MiB stack segment (mapped lazily), whatever thread calls:
/// pest refuses to recurse when its thread's stack runs low, which on a small thread stack would
/// turn valid, deeply bracketed text into a syntax error.
fn pest_parse(src: &str) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    stacker::grow(8 * 1024 * 1024, || LossParser::parse(Rule::file, src))
}

/// Parses one file. Syntax errors go to `diags`; the returned AST holds every item that parsed.
pub fn parse_file(file: FileId, src: &str, diags: &mut Diagnostics) -> File {
    let mut out = File::default();
    if let Some(at) = too_deep(src) {
        diags.push(
            Diagnostic::new(
                Code::E0018,
                Span {
                    file,
                    start: at,
                    end: at + 1,
                },
                format!("brackets nest more than {MAX_NESTING} deep"),
            )
            .label(format!(
                "bracket number {} of an unclosed run",
                MAX_NESTING + 1
            ))
            .help("split the expression with `let` bindings or helper functions"),
        );
        return out;
    }
    match pest_parse(src) {
        Ok(mut pairs) => {
            if let Some(p) = pairs.next() {
                collect_items(p, file, 0, &mut out);
            }
        }
        Err(_) => {
            // Recover: parse each top-level chunk on its own so all broken items are reported.
            for (start, end) in chunks(src) {
                let text = &src[start..end];
                match pest_parse(text) {
                    Ok(mut pairs) => {
                        if let Some(p) = pairs.next() {
                            collect_items(p, file, start, &mut out);
                        }
                    }
                    Err(e) => diags.push(syntax_error(&e, file, start, text)),
                }
            }
        }
    }
    out
}

/// Byte ranges of the top-level items: a new chunk starts at each line whose first word is
/// `loss`, `fn` or `use`.
fn chunks(src: &str) -> Vec<(usize, usize)> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        let t = line.trim_start();
        let word: String = t
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if offset > 0 && matches!(word.as_str(), "loss" | "fn" | "use") {
            starts.push(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(src.len());
        out.push((s, e));
    }
    out
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::use_item | Rule::fn_item | Rule::loss_item => "`loss`, `fn` or `use`",
        Rule::ident => "a name",
        Rule::number | Rule::signed_number => "a number",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary
        | Rule::power
        | Rule::paren
        | Rule::call
        | Rule::axis_list
        | Rule::match_expr => "an expression",
        Rule::shape => "a shape such as `[B, C, ..S]`",
        Rule::axis_decl => "an axis name",
        Rule::input_decl => "`input`",
        Rule::param_decl => "`param`",
        Rule::let_stmt => "`let`",
        Rule::assign_stmt => "an assignment `name = value`",
        Rule::for_stmt | Rule::for_kw => "`for`",
        Rule::range_op => "`..` or `..=`",
        Rule::return_stmt => "`return`",
        Rule::diff_mark => "`diff`",
        Rule::labels_decl | Rule::labels_kw => "`labels(axis, ignore_param)`",
        Rule::value_range | Rule::in_kw => "a value range `in [lo, hi]`",
        Rule::param_type | Rule::variants | Rule::int_type => "a parameter type",
        Rule::fn_params => "parameter names",
        Rule::fn_short => "`=`",
        Rule::block => "`{`",
        Rule::kwarg => "`name = value`",
        Rule::match_arm => "a match arm `option => expr`",
        Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op | Rule::pow_op => {
            "an operator"
        }
        Rule::unary_op => "`-` or `!`",
        _ => "something else",
    }
}

fn syntax_error(e: &pest::error::Error<Rule>, file: FileId, base: usize, text: &str) -> Diagnostic {
    let (s, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((a, b)) => (a, b),
    };
    // Mark the offending token (up to the next whitespace), or one character.
    let tok_end = if end > s {
        end
    } else {
        let rest = &text[s.min(text.len())..];
        let n = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        s + n.clamp(usize::from(!rest.is_empty()), 24)
    };
    let found = text.get(s..tok_end).unwrap_or("").trim();
    let mut expected: Vec<&str> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.iter().map(describe).collect(),
        ErrorVariant::CustomError { .. } => vec![],
    };
    expected.sort();
    expected.dedup();
    let found_txt = if found.is_empty() {
        "end of input".to_string()
    } else {
        format!("`{found}`")
    };
    let message = format!("unexpected {found_txt}");
    let span = Span {
        file,
        start: base + s,
        end: base + tok_end.min(text.len()),
    };
    let mut d = Diagnostic::new(Code::E0001, span, message).label(if expected.is_empty() {
        "not valid here".to_string()
    } else {
        format!("expected {}", expected.join(" or "))
    });
    if found == "=" || found.starts_with('=') {
        d = d.help("bindings are written `let name = expr`; keyword arguments `name = value` go inside a call's parentheses");
    } else if expected.contains(&"`return`") {
        d = d.help("a loss or function body is `let` bindings followed by `return expr`");
    }
    d
}

fn sp(p: &Pair<Rule>, file: FileId, base: usize) -> Span {
    let s = p.as_span();
    Span {
        file,
        start: base + s.start(),
        end: base + s.end(),
    }
}

fn ident(p: Pair<Rule>, file: FileId, base: usize) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: sp(&p, file, base),
    }
}

fn collect_items(p: Pair<Rule>, file: FileId, base: usize, out: &mut File) {
    for item in p.into_inner() {
        match item.as_rule() {
            Rule::use_item => {
                for i in item.into_inner() {
                    out.uses.push(ident(i, file, base));
                }
            }
            Rule::fn_item => out.fns.push(fn_item(item, file, base)),
            Rule::loss_item => out.losses.push(loss_item(item, file, base)),
            _ => {}
        }
    }
}

fn fn_item(p: Pair<Rule>, file: FileId, base: usize) -> FnDef {
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("grammar: fn name"), file, base);
    let mut params = Vec::new();
    let mut body = None;
    for q in inner {
        match q.as_rule() {
            Rule::fn_params => params = q.into_inner().map(|i| ident(i, file, base)).collect(),
            Rule::fn_short => {
                let e = expr(q.into_inner().next().expect("grammar: fn expr"), file, base);
                body = Some(Body {
                    stmts: vec![],
                    result: e,
                });
            }
            Rule::block => body = Some(block(q, file, base)),
            _ => {}
        }
    }
    FnDef {
        name,
        params,
        body: body.expect("grammar: fn body"),
    }
}

fn block(p: Pair<Rule>, file: FileId, base: usize) -> Body {
    let mut stmts = Vec::new();
    let mut result = None;
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::return_stmt => {
                result = Some(expr(q.into_inner().next().expect("grammar"), file, base))
            }
            _ => stmts.extend(stmt(q, file, base)),
        }
    }
    Body {
        stmts,
        result: result.expect("grammar: return"),
    }
}

/// A `let`, assignment or `for` statement (`None` for any other rule).
fn stmt(q: Pair<Rule>, file: FileId, base: usize) -> Option<Stmt> {
    let rule = q.as_rule();
    let span = sp(&q, file, base);
    let mut i = q
        .into_inner()
        .filter(|p| !matches!(p.as_rule(), Rule::for_kw | Rule::in_kw));
    match rule {
        Rule::let_stmt | Rule::assign_stmt => {
            let n = ident(i.next().expect("grammar"), file, base);
            let e = expr(i.next().expect("grammar"), file, base);
            Some(if rule == Rule::let_stmt {
                Stmt::Let(n, e)
            } else {
                Stmt::Assign(n, e)
            })
        }
        Rule::for_stmt => {
            let var = ident(i.next().expect("grammar"), file, base);
            let lo = expr(i.next().expect("grammar"), file, base);
            let inclusive = i.next().expect("grammar").as_str() == "..=";
            let hi = expr(i.next().expect("grammar"), file, base);
            let body = i.filter_map(|s| stmt(s, file, base)).collect();
            Some(Stmt::For(Box::new(Loop {
                var,
                lo,
                hi,
                inclusive,
                body,
                span,
            })))
        }
        _ => None,
    }
}

fn loss_item(p: Pair<Rule>, file: FileId, base: usize) -> LossDef {
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("grammar: loss name"), file, base);
    let mut inputs = Vec::new();
    let mut params = Vec::new();
    let mut stmts = Vec::new();
    let mut result = None;
    for q in inner {
        match q.as_rule() {
            Rule::input_decl => inputs.push(input_decl(q, file, base)),
            Rule::param_decl => params.push(param_decl(q, file, base)),
            Rule::return_stmt => {
                result = Some(expr(q.into_inner().next().expect("grammar"), file, base))
            }
            _ => stmts.extend(stmt(q, file, base)),
        }
    }
    LossDef {
        name,
        inputs,
        params,
        body: Body {
            stmts,
            result: result.expect("grammar: return"),
        },
    }
}

fn input_decl(p: Pair<Rule>, file: FileId, base: usize) -> InputDecl {
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("grammar"), file, base);
    let mut shape = Vec::new();
    let mut diff = false;
    let mut default = None;
    let mut range = None;
    let mut labels = None;
    for q in inner {
        match q.as_rule() {
            Rule::shape => {
                for a in q.into_inner() {
                    let mut pack = false;
                    let mut nm = None;
                    for x in a.into_inner() {
                        match x.as_rule() {
                            Rule::pack_mark => pack = true,
                            Rule::ident => nm = Some(ident(x, file, base)),
                            _ => {}
                        }
                    }
                    shape.push(AxisDecl {
                        name: nm.expect("grammar: axis"),
                        pack,
                    });
                }
            }
            Rule::diff_mark => diff = true,
            Rule::value_range => range = value_range(q, file, base),
            Rule::signed_number => default = q.as_str().parse::<f64>().ok(),
            Rule::labels_decl => {
                let mut x = q.into_inner().filter(|x| x.as_rule() == Rule::ident);
                let axis = ident(x.next().expect("grammar: labels axis"), file, base);
                let ignore = ident(x.next().expect("grammar: labels ignore"), file, base);
                labels = Some((axis, ignore));
            }
            _ => {}
        }
    }
    InputDecl {
        name,
        shape,
        diff,
        default,
        range,
        labels,
    }
}

/// `in [lo, hi]` or `in int [lo, hi]`.
fn value_range(q: Pair<Rule>, file: FileId, base: usize) -> Option<ValueRange> {
    let span = sp(&q, file, base);
    let mut int = false;
    let mut bounds = Vec::new();
    for x in q.into_inner() {
        match x.as_rule() {
            Rule::int_type => int = true,
            Rule::signed_number => bounds.push(x.as_str().parse::<f64>().unwrap_or(f64::NAN)),
            _ => {}
        }
    }
    match bounds[..] {
        [lo, hi] => Some(ValueRange { lo, hi, int, span }),
        _ => None,
    }
}

fn param_decl(p: Pair<Rule>, file: FileId, base: usize) -> ParamDecl {
    let mut inner = p.into_inner();
    let name = ident(inner.next().expect("grammar"), file, base);
    let mut ty = ParamType::Number;
    let mut default = None;
    let (mut range, mut list_default) = (None, None);
    for q in inner {
        match q.as_rule() {
            Rule::param_type => {
                let t = q.into_inner().next().expect("grammar");
                ty = match t.as_rule() {
                    Rule::int_type => ParamType::Int,
                    Rule::axis_list => {
                        let span = sp(&t, file, base);
                        match t.into_inner().collect::<Vec<_>>().as_slice() {
                            [axis] => ParamType::Vector(ident(axis.clone(), file, base)),
                            // Zero or several axes: reported with the loss's axes (empty name).
                            _ => ParamType::Vector(Ident {
                                name: String::new(),
                                span,
                            }),
                        }
                    }
                    _ => ParamType::Enum(t.into_inner().map(|i| i.as_str().to_string()).collect()),
                };
            }
            Rule::expr => default = Some(expr(q, file, base)),
            Rule::value_range => range = value_range(q, file, base),
            Rule::number_list => {
                let span = sp(&q, file, base);
                let ws: Vec<f64> = q
                    .into_inner()
                    .map(|x| x.as_str().parse::<f64>().unwrap_or(f64::NAN))
                    .collect();
                default = Some(mk(
                    ExprKind::Number(ws.first().copied().unwrap_or(0.0)),
                    span,
                ));
                list_default = Some(ws);
            }
            _ => {}
        }
    }
    if range.is_some_and(|r| r.int) && ty == ParamType::Number {
        ty = ParamType::Int;
    }
    let name_span = name.span;
    ParamDecl {
        name,
        ty,
        // The grammar always gives a default; the name's span stands in were it ever absent.
        default: default.unwrap_or_else(|| mk(ExprKind::Number(f64::NAN), name_span)),
        range,
        list_default,
    }
}

fn mk(kind: ExprKind, span: Span) -> Expr {
    Expr { kind, span }
}

fn join(a: Span, b: Span) -> Span {
    Span {
        file: a.file,
        start: a.start.min(b.start),
        end: a.end.max(b.end),
    }
}

fn binop(s: &str) -> BinOp {
    match s {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "^" => BinOp::Pow,
        ">" => BinOp::Gt,
        "<" => BinOp::Lt,
        ">=" => BinOp::Ge,
        "<=" => BinOp::Le,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "&" => BinOp::And,
        _ => BinOp::Or,
    }
}

fn unop(s: &str) -> UnOp {
    if s == "-" {
        UnOp::Neg
    } else {
        UnOp::Not
    }
}

fn expr(p: Pair<Rule>, file: FileId, base: usize) -> Expr {
    super::grow_stack(|| expr_at(p, file, base))
}

fn expr_at(p: Pair<Rule>, file: FileId, base: usize) -> Expr {
    let span = sp(&p, file, base);
    match p.as_rule() {
        Rule::expr | Rule::paren => {
            let inner = p.into_inner().next().expect("grammar");
            let mut e = expr(inner, file, base);
            e.span = span;
            e
        }
        Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::add_expr | Rule::mul_expr => {
            let mut inner = p.into_inner();
            let first = expr(inner.next().expect("grammar"), file, base);
            let mut links = Vec::new();
            let mut last = first.span;
            while let Some(op) = inner.next() {
                let rhs = expr(inner.next().expect("grammar"), file, base);
                last = join(last, rhs.span);
                links.push(Link {
                    op: binop(op.as_str()),
                    rhs,
                    span: last,
                });
            }
            if links.is_empty() {
                first
            } else {
                mk(ExprKind::Chain(Box::new(first), links), span)
            }
        }
        Rule::unary => {
            let mut prefix = Vec::new();
            let mut operand = None;
            for q in p.into_inner() {
                if q.as_rule() == Rule::unary_op {
                    prefix.push((unop(q.as_str()), sp(&q, file, base)));
                } else {
                    operand = Some(expr(q, file, base));
                }
            }
            let operand = operand.expect("grammar: unary operand");
            if prefix.is_empty() {
                operand
            } else {
                mk(ExprKind::Prefix(prefix, Box::new(operand)), span)
            }
        }
        Rule::power => {
            let mut inner = p.into_inner();
            let base_expr = expr(inner.next().expect("grammar"), file, base);
            let mut exps: Vec<Exponent> = Vec::new();
            let mut prefix = Vec::new();
            for q in inner {
                match q.as_rule() {
                    Rule::pow_op => prefix.clear(),
                    Rule::unary_op => prefix.push((unop(q.as_str()), sp(&q, file, base))),
                    _ => exps.push(Exponent {
                        prefix: std::mem::take(&mut prefix),
                        operand: expr(q, file, base),
                    }),
                }
            }
            if exps.is_empty() {
                base_expr
            } else {
                mk(ExprKind::Power(Box::new(base_expr), exps), span)
            }
        }
        Rule::number => mk(
            ExprKind::Number(p.as_str().parse::<f64>().unwrap_or(f64::NAN)),
            span,
        ),
        Rule::ident => mk(ExprKind::Name(p.as_str().to_string()), span),
        Rule::axis_list => mk(
            ExprKind::AxisList(p.into_inner().map(|i| ident(i, file, base)).collect()),
            span,
        ),
        Rule::call => {
            let mut inner = p.into_inner();
            let name = ident(inner.next().expect("grammar"), file, base);
            let mut args = Vec::new();
            let mut kwargs = Vec::new();
            for a in inner {
                if a.as_rule() == Rule::kwarg {
                    let mut k = a.into_inner();
                    let kn = ident(k.next().expect("grammar"), file, base);
                    let kv = expr(k.next().expect("grammar"), file, base);
                    kwargs.push((kn, kv));
                } else {
                    args.push(expr(a, file, base));
                }
            }
            mk(ExprKind::Call { name, args, kwargs }, span)
        }
        Rule::match_expr => {
            let mut inner = p.into_inner();
            let scrutinee = ident(inner.next().expect("grammar"), file, base);
            let arms = inner
                .map(|arm| {
                    let mut a = arm.into_inner();
                    let n = ident(a.next().expect("grammar"), file, base);
                    let e = expr(a.next().expect("grammar"), file, base);
                    (n, e)
                })
                .collect();
            mk(ExprKind::Match { scrutinee, arms }, span)
        }
        _ => mk(ExprKind::Number(f64::NAN), span),
    }
}
