//! `cargo bench --bench compile`: compile time against program size. A loss whose result is a
//! sum of n terms (n = 10^3, 10^4, 10^5; three term shapes) is loaded (`Loss::from_source`:
//! parse, check, lower) and compiled (`Loss::compile`: autodiff, rewrites, size binding,
//! polynomial collection, fusion, VM code generation). Prints milliseconds and microseconds per
//! term: the per-term figure staying flat from 10^3 to 10^5 is what "near-linear" means here.
//! `LOSSLANG_BENCH_MAX_TERMS` caps n (default 100000).

use std::time::Instant;

use losslang::Loss;

fn program(kind: &str, n: usize) -> String {
    let terms: Vec<String> = (0..n)
        .map(|i| match kind {
            "x" => "logits".to_string(),
            "scaled" => format!("{}.5 * logits", i % 97),
            _ => format!("sigmoid(logits + {})", i % 89),
        })
        .collect();
    format!(
        "loss big {{ input logits: [B, C, ..S] diff  input target: [B, C, ..S]\n return mean(({}) * target) }}",
        terms.join(" + ")
    )
}

fn main() {
    let max: usize = std::env::var("LOSSLANG_BENCH_MAX_TERMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let shape = [2usize, 1, 64, 64];
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>14}",
        "terms", "kind", "load ms", "compile ms", "us per term"
    );
    for kind in ["x", "scaled", "sigmoid"] {
        let mut n = 1000;
        while n <= max {
            let src = program(kind, n);
            let t0 = Instant::now();
            let loss = Loss::from_source(&src).expect("the program compiles");
            let t1 = Instant::now();
            let plan = loss
                .compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])
                .expect("the plan compiles");
            let t2 = Instant::now();
            std::hint::black_box(plan.passes());
            let (load, compile) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
            println!(
                "{n:>8} {kind:>8} {:>12.1} {:>12.1} {:>14.2}",
                load * 1e3,
                compile * 1e3,
                (load + compile) * 1e6 / n as f64
            );
            n *= 10;
        }
    }
}
