//! No source aborts the process: deep brackets, long operator chains and deeply inlined helpers
//! are answered — accepted, or refused with a diagnostic — on a thread with a small stack
//! (256 KiB, an eighth of a spawned thread's default), where recursion on any of them would
//! overflow. Timings live in `benches/compile.rs`, not here.

use losslang::{Error, Loss};

use crate::common;

/// Loads (and, with `shape`, compiles) `src` on a thread with a 256 KiB stack.
fn answer(src: String, compile: bool) -> Result<(), Vec<&'static str>> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let loss = match Loss::from_source(&src) {
                Ok(l) => l,
                Err(Error::Compile { codes, .. }) => return Err(codes),
                Err(e) => panic!("unexpected error: {e}"),
            };
            if compile {
                let s = [2usize, 1, 4, 4];
                loss.compile::<f32>(&[("logits", &s[..]), ("target", &s[..])])
                    .expect("compiles");
            }
            Ok(())
        })
        .unwrap()
        .join()
        .expect("the thread did not panic")
}

fn program(expr: &str) -> String {
    format!("loss big {{ input logits: [B, C, ..S] diff  input target: [B, C, ..S]\n return mean(({expr}) * target) }}")
}

#[test]
fn deep_brackets_are_refused_not_overflowed() {
    let e = format!("{}logits{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(answer(program(&e), false), Err(vec!["E0018"]));
    // Unbalanced: the same answer, not a parser crash.
    let e = "(".repeat(10_000);
    assert_eq!(answer(program(&e), false), Err(vec!["E0018"]));
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    // `{`, `mean(` and the outer `(` take three of the 128 levels.
    let n = losslang::diagnostics::MAX_NESTING - 3;
    let e = format!("{}logits{}", "tanh(".repeat(n), ")".repeat(n));
    assert_eq!(answer(program(&e), true), Ok(()));
}

#[test]
fn long_operator_chains_are_accepted() {
    let sum = vec!["logits"; 100_000].join(" + ");
    assert_eq!(answer(program(&sum), false), Ok(()));
    let sum: Vec<String> = (0..20_000)
        .map(|i| format!("{}.5 * logits", i % 7))
        .collect();
    assert_eq!(answer(program(&sum.join(" - ")), true), Ok(()));
    let neg = format!("{}logits", "-".repeat(100_000));
    assert_eq!(answer(program(&neg), true), Ok(()));
    let pow = vec!["sigmoid(logits)"; 10_000].join(" ^ ");
    assert_eq!(answer(program(&pow), true), Ok(()));
}

#[test]
fn deeply_inlined_helpers_are_refused_not_overflowed() {
    let mut src = common::helper_chain(60, 100);
    src.push_str(&program("f0(logits)"));
    assert_eq!(answer(src, false), Err(vec!["E0021"]));
}
