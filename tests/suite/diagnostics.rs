//! Every error code of the front end, with its rendered message: code, `file:line:col`, the
//! message, the marked source and the help line.

use losslang::{Error, Loss};

use crate::common;

/// Compiles `src` as `t.loss` and returns the rendered diagnostics (panics if it compiles).
fn errors(src: &str) -> (Vec<&'static str>, String) {
    match Loss::from_source_in("t.loss", src, None) {
        Err(Error::Compile {
            rendered, codes, ..
        }) => (codes, rendered),
        Err(e) => panic!("expected a compile error, got: {e}"),
        Ok(_) => panic!("expected a compile error, but it compiled"),
    }
}

fn expect(src: &str, code: &str, at: &str, parts: &[&str]) {
    let (codes, text) = errors(src);
    assert!(
        codes.contains(&code),
        "expected {code} in {codes:?}:\n{text}"
    );
    assert!(text.contains(&format!("error[{code}]")), "{text}");
    assert!(
        text.contains(&format!("t.loss:{at}")),
        "expected location t.loss:{at} in:\n{text}"
    );
    for p in parts {
        assert!(text.contains(p), "expected `{p}` in:\n{text}");
    }
}

const HEAD: &str = "loss t {\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n";

fn body(lines: &str) -> String {
    format!("{HEAD}{lines}\n}}\n")
}

#[test]
fn e0001_syntax_error_reports_every_broken_item() {
    let src = "loss a {\n    input logits: [B, C, ..S] diff\n    let p = sigmoid(logits) +\n    return mean(p)\n}\n\nloss b {\n    input logits: [B, C, ..S] diff\n    return mean(logits\n}\n";
    let (codes, text) = errors(src);
    assert_eq!(codes.iter().filter(|c| **c == "E0001").count(), 2, "{text}");
    assert!(text.contains("t.loss:4:5"), "{text}");
    assert!(text.contains("unexpected `return`"), "{text}");
    assert!(text.contains("expected an expression"), "{text}");
    assert!(text.contains("t.loss:10:1"), "{text}");
}

#[test]
fn e0002_unknown_name_suggests() {
    expect(
        &body("    return mean(sigmoid(logits) * targt)"),
        "E0002",
        "4:35",
        &["unknown name `targt`", "did you mean `target`?"],
    );
}

#[test]
fn e0003_unknown_function_suggests() {
    expect(
        &body("    return mean(sigmod(logits))"),
        "E0003",
        "4:17",
        &["unknown function `sigmod`", "did you mean `sigmoid`?"],
    );
}

#[test]
fn e0004_wrong_arity() {
    expect(
        &body("    return mean(sigmoid(logits, target))"),
        "E0004",
        "4:17",
        &["`sigmoid` takes 1 argument(s), got 2"],
    );
}

#[test]
fn e0005_unknown_parameter_of_called_loss() {
    let src = format!(
        "use dice\n{}",
        body("    return dice(logits, target, smoth = 2)")
    );
    expect(
        &src,
        "E0005",
        "5:33",
        &[
            "parameter `smoth` is not declared by `dice`; it declares `smooth`, `reduction`",
            "did you mean `smooth`?",
        ],
    );
}

#[test]
fn e0006_axis_missing_from_argument() {
    let src = format!(
        "use dice\n{}",
        body("    return dice(logits, sum(target, over = [C]))")
    );
    expect(
        &src,
        "E0006",
        "5:25",
        &[
            "axis `C` is missing from `target`",
            "`dice` declares `target` with axes [B, C, S]",
        ],
    );
}

#[test]
fn e0007_unknown_axis() {
    expect(
        &body("    return mean(sum(logits, over = [K]))"),
        "E0007",
        "4:37",
        &["unknown axis `K`", "the loss's axes are B, C, S"],
    );
}

#[test]
fn e0008_reduce_over_missing_axis() {
    expect(
        &body("    return sum(sum(logits, over = [C]), over = [C, S])"),
        "E0008",
        "4:48",
        &["cannot reduce over [C]: the value has axes [B, S]"],
    );
}

#[test]
fn e0009_not_differentiable() {
    expect(
        &body("    return mean((logits > 0) * target)"),
        "E0009",
        "2:11",
        &[
            "`logits` does not reach the result through differentiable operations",
            "it only flows through `>` (line 4, column 17)",
        ],
    );
}

#[test]
fn e0010_no_differentiable_input() {
    expect(
        "loss t {\n    input target: [B, C]\n    return mean(target)\n}\n",
        "E0010",
        "1:6",
        &[
            "declares no differentiable input",
            "`input logits: [B, C, ..S] diff`",
        ],
    );
}

#[test]
fn e0011_duplicate_definition() {
    let src = format!(
        "fn f(x) = x\nfn f(y) = y\n{}",
        body("    return mean(f(logits))")
    );
    expect(
        &src,
        "E0011",
        "2:4",
        &[
            "`f` is defined twice",
            "the first definition is at line 1, column 4",
        ],
    );
}

#[test]
fn e0012_wrong_kind_of_value() {
    expect(
        &body("    return mean(logits + [B])"),
        "E0012",
        "4:26",
        &["an operand of `+` must be a tensor, not an axis list"],
    );
}

#[test]
fn e0013_invalid_option() {
    let src = format!(
        "use dice\n{}",
        body("    return dice(logits, target, reduction = pixel)")
    );
    expect(
        &src,
        "E0013",
        "5:45",
        &[
            "`pixel` is not an option of `dice`'s parameter `reduction`",
            "expected one of batch | image | class",
        ],
    );
}

#[test]
fn e0014_use_of_missing_file() {
    let src = format!("use nowhere\n{}", body("    return mean(logits)"));
    expect(
        &src,
        "E0014",
        "1:5",
        &[
            "cannot find `nowhere.loss`",
            "looks for `nowhere.loss` beside this file, then in the standard library",
        ],
    );
}

#[test]
fn e0015_recursion() {
    let src = format!("fn f(x) = f(x)\n{}", body("    return mean(f(logits))"));
    expect(
        &src,
        "E0015",
        "1:11",
        &["`f` calls itself", "cannot recurse"],
    );
}

#[test]
fn e0016_result_not_scalar() {
    expect(
        &body("    return sum(logits, over = [S])"),
        "E0016",
        "4:12",
        &["has axes [B, C], but a loss must be a scalar", "reduce it"],
    );
}

#[test]
fn e0017_axis_order() {
    expect("loss t {\n    input logits: [B, C] diff\n    input w: [C, B]\n    return mean(logits * w)\n}\n", "E0017", "3:18", &["axis `B` comes before `C` in `logits`, but after it here", "no axis order fits every input: declare the axes of `w` in the order `logits` uses"]);
}

/// Where one axis order fits every input, it is found (here `B, Y, X`, although `X` is seen
/// before `Y`), and the value is the hand-computed one: sum over b, y, x of p[b, x] * q[b, y, x].
#[test]
fn e0017_not_raised_when_a_consistent_order_exists() {
    let src =
        "loss t {\n    input p: [B, X] diff\n    input q: [B, Y, X]\n    return sum(p * q)\n}\n";
    let loss = Loss::from_source_in("t.loss", src, None).expect("a consistent order exists");
    let names = &loss.signature().space.names;
    assert_eq!(names, &["B", "Y", "X"]);
    let p = ndarray::Array::from_shape_fn((2, 3), |(b, x)| (1 + b * 3 + x) as f64).into_dyn();
    let q = ndarray::Array::from_shape_fn((2, 2, 3), |(b, y, x)| (b + 2 * y + x) as f64 - 1.5)
        .into_dyn();
    let mut expected = 0.0;
    let mut grad_p = ndarray::Array2::<f64>::zeros((2, 3));
    for b in 0..2 {
        for y in 0..2 {
            for x in 0..3 {
                expected += p[[b, x]] * q[[b, y, x]];
                grad_p[[b, x]] += q[[b, y, x]];
            }
        }
    }
    let mut plan = loss
        .compile::<f64>(&[("p", &[2, 3]), ("q", &[2, 2, 3])])
        .unwrap();
    let out = plan
        .value_and_grad(&[("p", p.view()), ("q", q.view())])
        .unwrap();
    assert_eq!(out.value, expected);
    assert_eq!(out.grad("p"), &grad_p.into_dyn());
}

#[test]
fn e0030_window_constant_out_of_range() {
    expect("loss t {\n    input logits: [B, C, ..S] diff\n    return mean(gaussian_filter(logits, 4, 1.5))\n}\n", "E0030", "3:17", &["argument 2 (window) must be an odd whole number from 1 to 4095, got 4"]);
    expect("loss t {\n    input logits: [B, C, ..S] diff\n    return mean(gaussian_filter(logits, 3, -1))\n}\n", "E0030", "3:17", &["argument 3 (sigma) must be a finite positive number, got -1"]);
}

#[test]
fn e0031_graph_too_large() {
    // Each level calls the next twice with different arguments: 2^40 inlined copies. Answered
    // at the bound at once, not after minutes.
    let mut src = String::new();
    for i in 0..40 {
        src.push_str(&format!(
            "fn f{i}(x) = f{}(x * 2) + f{}(x * 3)\n",
            i + 1,
            i + 1
        ));
    }
    src.push_str("fn f40(x) = sigmoid(x)\n");
    src.push_str(&body("    return mean(f0(logits) * target)"));
    let t = std::time::Instant::now();
    let (codes, text) = errors(&src);
    assert!(codes.contains(&"E0031"), "{codes:?}\n{text}");
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    // The same calls with the same arguments are lowered once: 2^40 calls, 41 bodies.
    let mut src = String::new();
    for i in 0..40 {
        src.push_str(&format!("fn f{i}(x) = f{}(x) + f{}(x)\n", i + 1, i + 1));
    }
    src.push_str("fn f40(x) = sigmoid(x)\n");
    src.push_str(&body("    return mean(f0(logits) * target)"));
    let t = std::time::Instant::now();
    assert!(Loss::from_source(&src).is_ok());
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
}

#[test]
fn every_code_is_tested_here() {
    let me = include_str!("diagnostics.rs");
    for code in losslang::diagnostics::Code::ALL {
        let code = code.as_str();
        assert!(
            me.contains(&format!("fn {}_", code.to_lowercase())),
            "no test for {code}"
        );
    }
}

#[test]
fn errors_are_collected_not_stopped_at_first() {
    let (codes, text) = errors(&body("    let a = sigmod(logits)\n    let b = sum(logits, over = [K])\n    return mean(logits * targt)"));
    assert!(codes.len() >= 3, "{codes:?}\n{text}");
}

#[test]
fn nothing_panics_on_garbage() {
    let samples = ["", "loss", "loss {", "loss x { return }", "}}}}", "loss x { input a: [..S, ..T] diff return mean(a) }", "fn", "use", "loss x { input a: [B] diff = - return a }", "\u{0}\u{1}", "loss x { input a: [B] diff param p: q | r = s return sum(a) * match p { q => 1, r => 2 } }", "loss x { input a: [B] diff return sum(a) ^ ^ 2 }", "loss x { input a: [B] diff return 1e999 * sum(a) }"];
    for s in samples {
        let _ = Loss::from_source(s);
    }
}

mod fuzz {
    use proptest::prelude::*;

    const TOKENS: &[&str] = &[
        "loss", "fn", "use", "let", "return", "input", "param", "match", "diff", "int", "x",
        "logits", "target", "mask", "sum", "mean", "max", "sigmoid", "dice", "common", "over", "=",
        "==", "=>", "+", "-", "*", "/", "^", ">", "<", "&", "|", "!", "(", ")", "[", "]", "{", "}",
        ",", ":", "..", "B", "C", "S", "1", "0.5", "1e-6", "batch", "image", "\n", "#", " ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// Any token soup, and any mutation of a valid loss, gives a result or an error: never a panic.
        #[test]
        fn no_panic_on_token_soup(toks in prop::collection::vec(prop::sample::select(TOKENS), 0..60)) {
            let _ = losslang::Loss::from_source(&toks.join(" "));
        }

        #[test]
        fn no_panic_on_mutated_losses(cut in 0usize..400, insert in prop::sample::select(TOKENS), which in 0usize..3) {
            let base = match which {
                0 => include_str!("../../losses/dice.loss"),
                1 => include_str!("../../losses/exp_log.loss"),
                _ => include_str!("../../losses/bce_dice.loss"),
            };
            let at = base.char_indices().map(|(i, _)| i).nth(cut % base.chars().count()).unwrap_or(0);
            let src = format!("{}{}{}", &base[..at], insert, &base[at..]);
            if let Ok(loss) = losslang::Loss::from_source(&src) {
                let _ = loss.compile::<f32>(&[("logits", &[1, 2, 3, 4][..]), ("target", &[1, 2, 3, 4][..])]);
            }
        }
    }
}

#[test]
fn e0018_nesting_too_deep() {
    // 10^4 brackets: refused before parsing, at the first bracket beyond the limit, every run.
    let deep = format!("{}logits{}", "(".repeat(10_000), ")".repeat(10_000));
    let src = body(&format!("    return mean({deep} * target)"));
    // The loss's `{` and `mean(` are depths 1 and 2; the k-th `(` (column 16 + k) is depth k + 2.
    let col = 16 + losslang::diagnostics::MAX_NESTING - 1;
    expect(
        &src,
        "E0018",
        &format!("4:{col}"),
        &["brackets nest more than 128 deep"],
    );
}

#[test]
fn e0021_inlining_too_deep() {
    // Helpers that each nest a little, inlined into one another, hit the lowering's bound.
    let mut src = common::helper_chain(60, 12);
    src.push_str(&body("    return mean(f0(logits) * target)"));
    let (codes, text) = errors(&src);
    assert!(codes.contains(&"E0021"), "{codes:?}\n{text}");
    assert!(
        text.contains("expressions nest more than 512 deep through inlined calls"),
        "{text}"
    );
}

#[test]
fn e0019_number_out_of_range() {
    expect(
        &body("    return mean(logits * 1e999)"),
        "E0019",
        "4:26",
        &["number literal out of range"],
    );
    let (codes, _) = errors("loss t {\n    input logits: [B, C, ..S] diff\n    input mask: [B, C, ..S] = 2e400\n    return mean(logits * mask)\n}\n");
    assert!(codes.contains(&"E0019"), "{codes:?}");
}

#[test]
fn e0020_invalid_value_range() {
    let src = |range: &str| {
        format!("loss t {{\n    input logits: [B, C, ..S] diff\n    input d: [B, C, ..S] {range}\n    return mean(logits * d)\n}}\n")
    };
    expect(
        &src("in [1, -1]"),
        "E0020",
        "3:26",
        &[
            "invalid value range of input `d`",
            "not below the upper bound",
        ],
    );
    expect(
        &src("in int [0, 2.5]"),
        "E0020",
        "3:26",
        &["`in int` takes integer bounds"],
    );
    // Valid ranges compile.
    assert!(Loss::from_source(&src("in [-1, 1]")).is_ok());
    assert!(Loss::from_source(&src("in int [0, 18]")).is_ok());
}

#[test]
fn e0022_pack_declared_differently() {
    expect("loss t {\n    input logits: [B, C, ..S] diff\n    input w: [B, C, S]\n    return mean(logits * w)\n}\n", "E0022", "3:21", &["axis `S` was declared as a pack"]);
}

#[test]
fn e0023_too_many_axes() {
    let axes: Vec<String> = (0..16).map(|i| format!("A{i}")).collect();
    let src = format!(
        "loss t {{\n    input logits: [{}] diff\n    return mean(logits)\n}}\n",
        axes.join(", ")
    );
    let (codes, text) = errors(&src);
    assert!(codes.contains(&"E0023"), "{codes:?}\n{text}");
    assert!(text.contains("a loss may use at most 15 axes"), "{text}");
}

#[test]
fn e0024_two_pack_axes() {
    let (codes, text) =
        errors("loss t {\n    input logits: [..B, ..S] diff\n    return mean(logits)\n}\n");
    assert!(codes.contains(&"E0024"), "{codes:?}\n{text}");
    assert!(text.contains("more than one `..` axis"), "{text}");
}

#[test]
fn e0025_calls_nest_too_deeply() {
    // 70 helpers, each calling the next: deeper than the 64 levels of inlining.
    let mut src = common::helper_chain(70, 0);
    src.push_str(&body("    return mean(f0(logits) * target)"));
    let (codes, text) = errors(&src);
    assert!(codes.contains(&"E0025"), "{codes:?}\n{text}");
    assert!(text.contains("calls nest too deeply"), "{text}");
}

#[test]
fn every_code_has_an_explanation() {
    use losslang::diagnostics::Code;
    for c in Code::ALL {
        assert!(
            !c.summary().is_empty() && c.explanation().len() > 20,
            "{c:?}"
        );
        assert_eq!(Code::parse(c.as_str()), Some(*c));
    }
}

#[test]
fn e0026_window_argument_not_constant() {
    expect(
        &body("    return mean(gaussian_filter(logits, 3, mean(logits)))"),
        "E0026",
        "4:44",
        &[
            "argument 3 of `gaussian_filter` must be known when the loss compiles",
            "not a constant",
        ],
    );
}

#[test]
fn e0027_window_op_without_spatial_axes() {
    expect(
        "loss t {\n    input logits: [B, C] diff\n    return mean(edt(logits > 0) * logits)\n}\n",
        "E0027",
        "3:17",
        &["`edt` needs the loss's spatial axes", "a pack"],
    );
}

#[test]
fn e0028_loop_bound_not_a_compile_time_whole_number() {
    expect(
        &body("    let s = logits\n    for i in 1..=mean(logits) {\n        s = s + i\n    }\n    return mean(s)"),
        "E0028",
        "5:18",
        &["a loop bound must be a whole number known when the loss compiles"],
    );
    expect(
        &body("    let s = logits\n    for i in 0..2.5 {\n        s = s + i\n    }\n    return mean(s)"),
        "E0028",
        "5:17",
        &["not a compile-time whole number"],
    );
}

#[test]
fn e0029_loops_repeat_too_often() {
    expect(
        &body("    let s = logits\n    for i in 0..200 {\n        for j in 0..200 {\n            s = s + 1\n        }\n    }\n    return mean(s)"),
        "E0029",
        "6:9",
        &["more than 10000 times in all", "this loop alone runs 200 times"],
    );
}

#[test]
fn loop_bodies_assign_carried_names_and_may_not_shadow_them() {
    // `let` of a name bound outside the loop would hide it from the next iteration.
    expect(
        &body("    let s = logits\n    for i in 1..3 {\n        let s = s + i\n    }\n    return mean(s)"),
        "E0011",
        "6:13",
        &["`s` is already bound outside this loop", "assign it (`s = ...`)"],
    );
    expect(
        &body("    for i in 1..3 {\n        t = logits\n    }\n    return mean(logits)"),
        "E0002",
        "5:9",
        &["assignment to unknown name `t`", "let t = ..."],
    );
}

/// A vector parameter is declared over one plain axis the loss has.
#[test]
fn vector_parameter_declarations() {
    let src = |ty: &str| {
        body(&format!(
            "    param w: {ty} = 1\n    return mean(w * logits)"
        ))
    };
    expect(
        &src("[S]"),
        "E0012",
        "4:15",
        &["declared over the pack axis `..S`", "a pack axis"],
    );
    expect(
        &src("[K]"),
        "E0007",
        "4:15",
        &["declared over `K`, which no input of `t` has"],
    );
    expect(
        &src("[B, C]"),
        "E0012",
        "4:14",
        &["declared over exactly one axis"],
    );
    // The default may vary along the axis, not beyond it.
    expect(
        &body("    param w: [C] = index([B])\n    return mean(w * logits)"),
        "E0013",
        "4:20",
        &["has axes [B]"],
    );
}

/// `Error::Compile` carries each diagnostic as data: code, file, line, column, message, help —
/// the same place the rendered text marks (line 4, column 17: the `s` of `sigmoidd`).
#[test]
fn compile_errors_carry_structured_diagnostics() {
    let src = body("    return mean(sigmoidd(logits))");
    let Err(Error::Compile {
        diagnostics,
        rendered,
        ..
    }) = Loss::from_source_in("t.loss", &src, None)
    else {
        panic!("expected a compile error");
    };
    assert_eq!(diagnostics.len(), 1, "{rendered}");
    let d = &diagnostics[0];
    assert_eq!(
        (d.file.as_str(), d.line, d.column),
        ("t.loss", 4, 17),
        "{d:?}"
    );
    assert!(rendered.contains("t.loss:4:17"), "{rendered}");
    assert!(d.message.contains("sigmoidd"), "{d:?}");
    assert!(
        d.help.as_deref().is_some_and(|h| h.contains("sigmoid")),
        "{d:?}"
    );
    assert!(
        rendered.contains(&format!("error[{}]", d.code)),
        "{rendered}"
    );
}
