//! Operator precedence and associativity as written in `.loss` source, checked on values: the
//! parser builds flat chains, and the lowering must fold them exactly as the grammar says
//! (`^` right-associative with prefix operators binding looser than it, the others left).

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Loss;

/// The value of a constant expression `e`, through a loss that adds it to a zero tensor term.
fn value(e: &str) -> f64 {
    let src =
        format!("loss k {{ input logits: [B, C, ..S] diff\n return mean(logits * 0) + ({e}) }}");
    let loss = Loss::from_source(&src).unwrap_or_else(|err| panic!("{e}: {err}"));
    let shape = [1usize, 1, 2];
    let mut plan = loss.compile::<f64>(&[("logits", &shape[..])]).unwrap();
    let z = ArrayD::from_elem(IxDyn(&shape), 0.25);
    plan.value(&[("logits", z.view())]).unwrap()
}

#[test]
fn chains_fold_as_the_grammar_says() {
    let cases: &[(&str, f64)] = &[
        ("2 ^ 3 ^ 2", 512.0), // right-associative: 2^(3^2)
        ("-2 ^ 2", -4.0),     // prefix minus binds looser than ^
        ("2 ^ -1 ^ 2", 0.5),  // 2^(-(1^2))
        ("2 ^ --1", 2.0),     // two prefix operators on an exponent
        ("10 - 4 - 3", 3.0),  // left-associative
        ("64 / 4 / 2", 8.0),
        ("1 + 2 * 3 - 4 / 2", 5.0), // * and / before + and -
        ("(1 + 2) * 3", 9.0),
        ("---3", -3.0),
        ("1 - -1", 2.0),
        ("2 * 3 ^ 2", 18.0),
        ("(2 > 1) + (3 > 4) * 5", 1.0),
        ("(1 > 0) & (2 > 1) | 0", 1.0),
        ("!(1 > 0) + 2", 2.0),
    ];
    for (e, want) in cases {
        let got = value(e);
        assert!(
            (got - want).abs() < 1e-12,
            "{e}: got {got}, expected {want}"
        );
    }
}

#[test]
fn a_long_chain_folds_left_to_right() {
    // 1 - 1 - 1 - ... (n ones): 1 - (n - 1); a right fold would give 0 or 1.
    let n = 1001;
    let e = vec!["1"; n].join(" - ");
    assert_eq!(value(&e), 1.0 - (n as f64 - 1.0));
}

#[test]
fn for_loops_unroll_with_the_variable_a_constant_and_assignments_carried() {
    let loops = |body: &str| {
        let src = format!(
            "fn f(x) {{\n let acc = 0 * x\n {body}\n return acc\n}}\n\
             loss k {{ input logits: [B, C, ..S] diff\n return mean(logits * 0) + f(1) }}"
        );
        let loss = Loss::from_source(&src).unwrap_or_else(|err| panic!("{body}: {err}"));
        let shape = [1usize, 1, 2];
        let mut plan = loss.compile::<f64>(&[("logits", &shape[..])]).unwrap();
        let z = ArrayD::from_elem(IxDyn(&shape), 0.25);
        plan.value(&[("logits", z.view())]).unwrap()
    };
    let cases: &[(&str, f64)] = &[
        ("for i in 1..=4 { acc = acc + i }", 10.0), // 1 + 2 + 3 + 4
        ("for i in 1..4 { acc = acc + i }", 6.0),   // `..` leaves out the upper bound
        ("for i in 3..1 { acc = acc + i }", 0.0),   // empty range: the body never runs
        ("for i in 1..=3 { acc = acc * 10 + i }", 123.0), // each copy sees the last one's value
        // A local `let` is fresh in each copy; nested loops see the outer variable.
        (
            "for i in 1..=2 { let t = i * 100\n for j in 1..=3 { acc = acc + t + j } }",
            912.0,
        ),
        // Assigning a helper's parameter carries too: x = 1, then 2, 4, 8.
        ("for _ in 1..=3 { x = 2 * x }\n acc = x", 8.0),
    ];
    for (b, want) in cases {
        let got = loops(b);
        assert!(
            (got - want).abs() < 1e-12,
            "{b}: got {got}, expected {want}"
        );
    }
}
