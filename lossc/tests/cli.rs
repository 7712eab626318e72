//! The command line as a user runs it: `check`, `eval` (JSON and .npy inputs), `graph`, `bench`.

use std::path::PathBuf;
use std::process::{Command, Output};

#[path = "../../tests/common/mod.rs"]
mod common;

/// `lossc` run from the workspace root (where `losses/` is).
fn lossc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run lossc")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lossc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn check_passes_on_the_standard_library() {
    let o = lossc(&["check", "losses/"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("`dice`  gradients: logits"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn check_fails_with_location_on_a_broken_file() {
    let p = tmp(
        "broken.loss",
        "loss broken {\n    input logits: [B, C, ..S] diff\n    return mean(sigmod(logits))\n}\n",
    );
    let o = lossc(&["check", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("broken.loss:3:17") && err.contains("did you mean `sigmoid`?"),
        "{err}"
    );
    assert!(out.contains("1 failed"), "{out}");
}

#[test]
fn eval_matches_a_golden_case_in_both_dtypes() {
    let g = common::golden("tversky");
    let case = g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rand_2x3x16x16_image")
        .unwrap();
    let p = tmp(
        "tversky_case.json",
        &serde_json::to_string(&case["inputs"]).unwrap(),
    );
    let want = case["value"].as_f64().unwrap();
    for (dtype, tol) in [("f64", 1e-12), ("f32", 1e-5)] {
        let o = lossc(&[
            "eval",
            "losses/tversky.loss",
            "--inputs",
            p.to_str().unwrap(),
            "--set",
            "reduction=image",
            "--dtype",
            dtype,
            "--grad",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got = v["value"].as_f64().unwrap();
        assert!((got - want).abs() <= tol, "{dtype}: {got} vs {want}");
        let gw = common::array(&case["grad"]["logits"]);
        let gg = common::array(&v["grad"]["logits"]);
        assert_eq!(gw.shape(), gg.shape());
        let gmax = gw.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let worst = gw
            .iter()
            .zip(gg.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= if dtype == "f64" { 1e-9 } else { 1e-3 } * gmax,
            "{dtype}: grad err {worst}"
        );
    }
}

#[test]
fn eval_accepts_a_whole_golden_case_with_its_params() {
    let g = common::golden("focal");
    let case = g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rand_2x1x16x16_a75g1p5")
        .unwrap();
    let p = tmp("focal_case.json", &serde_json::to_string(case).unwrap());
    let o = lossc(&["eval", "focal", "--inputs", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((v["value"].as_f64().unwrap() - case["value"].as_f64().unwrap()).abs() < 1e-12);
    assert!(v.get("grad").is_none());
}

#[test]
fn eval_reads_npy_inputs() {
    let dir = std::env::temp_dir().join(format!("lossc-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logits = losslang::ndarray::ArrayD::<f32>::from_shape_vec(
        vec![1, 1, 2, 2],
        vec![0.5, -1.0, 2.0, 0.0],
    )
    .unwrap();
    let target = losslang::ndarray::ArrayD::<f64>::from_shape_vec(
        vec![1, 1, 2, 2],
        vec![1.0, 0.0, 1.0, 0.0],
    )
    .unwrap();
    ndarray_npy::write_npy(dir.join("z.npy"), &logits).unwrap();
    ndarray_npy::write_npy(dir.join("y.npy"), &target).unwrap();
    let o = lossc(&[
        "eval",
        "bce",
        "--input",
        &format!("logits={}", dir.join("z.npy").display()),
        "--input",
        &format!("target={}", dir.join("y.npy").display()),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Hand derivation: mean of softplus(-0.5), softplus(-1), softplus(-2), softplus(0).
    let sp = |x: f64| (1.0 + x.exp()).ln();
    let want = (sp(-0.5) + sp(-1.0) + sp(-2.0) + sp(0.0)) / 4.0;
    assert!((v["value"].as_f64().unwrap() - want).abs() < 1e-12, "{out}");
}

/// Masks and labels stored as bool, uint8, int32 or int64 `.npy` arrays are read as the same
/// values: each gives the float64 target's result exactly; an int64 beyond 2^53 is refused with
/// its index; an unsupported dtype names the supported ones.
#[test]
fn eval_reads_integer_and_bool_npy_targets() {
    use losslang::ndarray::ArrayD;
    let dir = std::env::temp_dir().join(format!("lossc-npy-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shape = vec![1, 1, 2, 3];
    let bits = [true, false, true, true, false, false];
    let logits =
        ArrayD::<f64>::from_shape_vec(shape.clone(), vec![0.5, -1.0, 2.0, 0.0, 3.0, -0.25])
            .unwrap();
    ndarray_npy::write_npy(dir.join("z.npy"), &logits).unwrap();
    let as_f = |b: bool| if b { 1.0 } else { 0.0 };
    let f64s = ArrayD::from_shape_vec(shape.clone(), bits.map(as_f).to_vec()).unwrap();
    ndarray_npy::write_npy(dir.join("f64.npy"), &f64s).unwrap();
    ndarray_npy::write_npy(
        dir.join("bool.npy"),
        &ArrayD::from_shape_vec(shape.clone(), bits.to_vec()).unwrap(),
    )
    .unwrap();
    ndarray_npy::write_npy(
        dir.join("u8.npy"),
        &ArrayD::from_shape_vec(shape.clone(), bits.map(u8::from).to_vec()).unwrap(),
    )
    .unwrap();
    ndarray_npy::write_npy(
        dir.join("i32.npy"),
        &ArrayD::from_shape_vec(shape.clone(), bits.map(i32::from).to_vec()).unwrap(),
    )
    .unwrap();
    ndarray_npy::write_npy(
        dir.join("i64.npy"),
        &ArrayD::from_shape_vec(shape.clone(), bits.map(i64::from).to_vec()).unwrap(),
    )
    .unwrap();
    let run = |target: &str| {
        let o = lossc(&[
            "eval",
            "dice",
            "--input",
            &format!("logits={}", dir.join("z.npy").display()),
            "--input",
            &format!("target={}", dir.join(target).display()),
        ]);
        let (out, err) = text(&o);
        (o.status.success(), out, err)
    };
    let (ok, want, err) = run("f64.npy");
    assert!(ok, "{err}");
    for f in ["bool.npy", "u8.npy", "i32.npy", "i64.npy"] {
        let (ok, out, err) = run(f);
        assert!(ok, "{f}: {err}");
        assert_eq!(out, want, "{f}");
    }
    let mut big = ArrayD::<i64>::zeros(shape.clone());
    big[[0, 0, 1, 1]] = (1 << 53) + 1;
    ndarray_npy::write_npy(dir.join("big.npy"), &big).unwrap();
    let (ok, _, err) = run("big.npy");
    assert!(
        !ok && err.contains("flat index 4") && err.contains("2^53"),
        "{err}"
    );
    ndarray_npy::write_npy(dir.join("u16.npy"), &ArrayD::<u16>::zeros(shape.clone())).unwrap();
    let (ok, _, err) = run("u16.npy");
    assert!(!ok && err.contains("bool, uint8, int32 or int64"), "{err}");
}

#[test]
fn eval_errors_are_clear() {
    let p = tmp(
        "bad_case.json",
        r#"{"logits": {"shape": [1,1,2,2], "data": [0,0,0,0]}, "target": {"shape": [1,2,2,2], "data": [0,0,0,0,0,0,0,0]}}"#,
    );
    let o = lossc(&["eval", "dice", "--inputs", p.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("input `target`") && err.contains("[1, 2, 2, 2]"),
        "{err}"
    );

    let p = tmp(
        "extra_case.json",
        r#"{"logits": {"shape": [1,1,2,2], "data": [0,0,0,0]}, "target": {"shape": [1,1,2,2], "data": [0,0,0,0]}, "weights": {"shape": [1], "data": [1]}}"#,
    );
    let (_, err) = text(&lossc(&["eval", "dice", "--inputs", p.to_str().unwrap()]));
    assert!(err.contains("unknown input `weights`"), "{err}");

    let p = tmp(
        "missing_case.json",
        r#"{"logits": {"shape": [1,1,2,2], "data": [0,0,0,0]}}"#,
    );
    let (_, err) = text(&lossc(&["eval", "dice", "--inputs", p.to_str().unwrap()]));
    assert!(err.contains("missing input `target`"), "{err}");

    let p = tmp(
        "ok_case.json",
        r#"{"logits": {"shape": [1,1,2,2], "data": [0,0,0,0]}, "target": {"shape": [1,1,2,2], "data": [0,0,0,0]}}"#,
    );
    let o = lossc(&[
        "eval",
        "dice",
        "--inputs",
        p.to_str().unwrap(),
        "--set",
        "smoth=2",
    ]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("parameter `smoth` is not declared by `dice`"),
        "{err}"
    );
}

#[test]
fn graph_prints_text_and_dot() {
    for stage in ["parsed", "autodiff", "optimised"] {
        let o = lossc(&["graph", "losses/dice.loss", "--stage", stage]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        assert!(
            out.contains("sigmoid(") && out.contains("value = %"),
            "{stage}: {out}"
        );
        if stage != "parsed" {
            assert!(out.contains("grad.logits = %"), "{out}");
        }
    }
    let (out, _) = text(&lossc(&["graph", "bce", "--dot", "--with", "mask"]));
    assert!(
        out.starts_with("digraph") && out.contains("->") && out.contains("mask"),
        "{out}"
    );
}

#[test]
fn fused_stage_shows_passes_and_clusters() {
    let (out, err) = text(&lossc(&["graph", "bce", "--stage", "fused"]));
    assert!(
        out.contains("1 memory pass(es)") && out.contains("pass 0: MapReduce kernel"),
        "{out}{err}"
    );
    let (out, _) = text(&lossc(&["graph", "dice", "--stage", "fused"]));
    assert!(
        out.contains("2 memory pass(es)")
            && out.contains("pass 1: Map kernel")
            && out.contains("store grad.logits"),
        "{out}"
    );
    let (out, _) = text(&lossc(&["graph", "tversky", "--stage", "fused", "--dot"]));
    assert!(
        out.contains("subgraph cluster_pass0") && out.contains("subgraph cluster_pass1"),
        "{out}"
    );
}

/// Polynomial collection: tversky's gradient pass is `(a y + b) sigmoid(x) sigmoid(-x)` with `a`,
/// `b` per-group coefficients — logits, target, the two sigmoids (one family instruction), the
/// negation they share, `a y + b` and the triple product: 7 nodes per element (12 before
/// collection: three terms, each with its own products).
#[test]
fn gradient_pass_is_collected() {
    let (out, _) = text(&lossc(&["graph", "tversky", "--stage", "fused"]));
    assert!(
        out.contains("pass 1: Map kernel, 7 nodes per element"),
        "{out}"
    );
    // FP = sum(p - y*p) becomes sum(p) - sum(y*p) (rule sum_of_difference): TP's product is
    // summed once, the difference taken on the totals; no subtraction left per element.
    let pass0 = out
        .split("\npass 0:")
        .nth(1)
        .unwrap()
        .split("tail")
        .next()
        .unwrap();
    assert!(pass0.contains("7 nodes per element"), "{out}");
    assert!(!pass0.contains("= sub("), "{out}");
}

#[test]
fn bench_reports_the_pass_counts() {
    for (loss, passes) in [
        ("bce", 1),
        ("focal", 1),
        ("weighted_bce", 1),
        ("dice", 2),
        ("jaccard", 2),
        ("tversky", 2),
        ("focal_tversky", 2),
        ("log_cosh_dice", 2),
        ("combo", 2),
        ("bce_dice", 2),
    ] {
        for extra in [&[][..], &["--set", "reduction=image"][..]] {
            if !extra.is_empty()
                && !matches!(
                    loss,
                    "dice" | "jaccard" | "tversky" | "focal_tversky" | "log_cosh_dice"
                )
            {
                continue;
            }
            let mut args = vec!["bench", loss, "--shape", "2,3,40,40", "--iters", "1"];
            args.extend_from_slice(extra);
            let (out, err) = text(&lossc(&args));
            let v: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|_| panic!("{loss}: {out}{err}"));
            assert_eq!(v["passes"], passes, "{loss} {extra:?}: {out}");
            assert_eq!(v["executor"], "fused", "{loss}");
        }
    }
}

#[test]
fn bench_takes_several_files() {
    let o = lossc(&[
        "bench",
        "losses/bce.loss",
        "losses/focal.loss",
        "losses/dice.loss",
        "--shape",
        "2,1,16,16",
        "--dtype",
        "f32",
        "--threads",
        "2",
        "--iters",
        "2",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["loss"].as_str().unwrap()).collect();
    assert_eq!(names, ["bce", "focal", "dice"]);
    assert_eq!(
        rows.iter()
            .map(|r| r["passes"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 1, 2]
    );
}

#[test]
fn bench_reports_json() {
    let o = lossc(&[
        "bench",
        "dice",
        "--shape",
        "2,1,32,32",
        "--iters",
        "3",
        "--threads",
        "2",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in ["median_ms", "elements", "threads", "passes", "compile_ms"] {
        assert!(v.get(k).is_some(), "{k} missing: {out}");
    }
    assert_eq!(v["elements"], 2048);
}

#[test]
fn check_fails_a_gradient_check_that_tested_nothing() {
    // `target` is 0/1 in every trial, so the gradient is 0 everywhere: not a pass.
    let hollow = "loss hollow {\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    return mean(where(target > 2, logits, 0))\n}\n";
    let o = lossc(&["check", tmp("hollow.loss", hollow).to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}\n{err}");
    assert!(out.contains("not exercised: logits"), "{out}");
    // Declaring what the data takes makes the same check test something, and pass.
    let ranged = hollow.replace(
        "input target: [B, C, ..S]",
        "input target: [B, C, ..S] in [0, 4]",
    );
    let o = lossc(&["check", tmp("ranged.loss", &ranged).to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    // `stop_grad` values are constants (the contract's `e` of cmss): the differences hold them at
    // the base point, so a loss whose only path is through one has nothing to check and fails.
    let src = "loss z {\n    input logits: [B, C, ..S] diff\n    return mean(stop_grad(logits)) + 0 * mean(logits)\n}\n";
    let o = lossc(&["check", tmp("z.loss", src).to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("not exercised: logits"), "{out}");
}

#[test]
fn check_of_a_folder_without_losses_fails() {
    let dir = std::env::temp_dir().join(format!("lossc-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = lossc(&["check", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}\n{err}");
    assert!(err.contains("no `.loss` file found"), "{err}");
}

#[test]
fn check_looks_at_helper_only_files() {
    let p = tmp(
        "helpers.loss",
        "fn f(x) = sigmod(x) + y\nfn g(a) = sum(a, over = [S, S])\n",
    );
    let o = lossc(&["check", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}\n{err}");
    for part in [
        "helpers.loss:1:11",
        "unknown function `sigmod`",
        "helpers.loss:1:23",
        "unknown name `y`",
        "axis `S` appears twice",
    ] {
        assert!(err.contains(part), "expected `{part}` in\n{err}");
    }
    // A loss called from a helper may take its inputs by name: no arity error.
    let p = tmp(
        "named.loss",
        "use dice\nfn f(z, y) = dice(z, target = y, smooth = 2)\n",
    );
    let o = lossc(&["check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = lossc(&["check", "losses/common.loss"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("helpers only"), "{:?}", text(&o));
    // Loop bodies too: an assignment needs a bound name; the loop variable is in scope.
    let p = tmp(
        "looping.loss",
        "fn f(x) {\n    for i in 1..3 {\n        y = x * i\n    }\n    return x\n}\n",
    );
    let o = lossc(&["check", p.to_str().unwrap()]);
    let err = text(&o).1;
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("looping.loss:3:9") && err.contains("assignment to unknown name `y`"),
        "{err}"
    );
    assert!(!err.contains("unknown name `i`"), "{err}");
}

#[test]
fn list_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lossc"))
        .arg("list")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before lossc writes
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
}

#[test]
fn bench_refuses_a_shape_that_does_not_fit_in_memory() {
    let o = lossc(&[
        "bench",
        "dice",
        "--shape",
        "100000,1,100000,1000",
        "--iters",
        "1",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}\n{err}");
    assert!(err.contains("needs 120000000000000 bytes"), "{err}");
    assert!(err.contains("is available"), "{err}");
    let o = lossc(&[
        "bench",
        "dice",
        "--shape",
        "4294967296,4294967296,4294967296,2",
        "--iters",
        "1",
    ]);
    assert!(text(&o).1.contains("more than 16 EiB"), "{:?}", text(&o));
}

#[test]
fn graph_fused_with_a_shape_shows_the_bound_schedule() {
    let o = lossc(&["graph", "dice", "--stage", "fused", "--shape", "2,1,8,8"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.starts_with("# dice at sizes [2, 1, 64]: 2 memory pass(es)"),
        "{out}"
    );
    let o = lossc(&["graph", "dice", "--stage", "parsed", "--shape", "2,1,8,8"]);
    assert!(!o.status.success());
}

/// Issue 11's acceptance: `eval softmax_ce` with a `[B, ..S]` class-index target holding 255s and
/// `--set ignore_index=255` equals the one-hot computation with those pixels masked.
#[test]
fn eval_takes_class_labels_with_an_ignore_value() {
    let z = "[0.5, -1, 2, 0.1, 1, 0.3, -0.2, 0.7, -0.5, 0.9, 0.4, -1.2]";
    let labels = tmp(
        "labels.json",
        &format!(
            r#"{{"logits": {{"shape": [1, 3, 2, 2], "data": {z}}},
                "target": {{"shape": [1, 2, 2], "data": [0, 2, 255, 1]}}}}"#
        ),
    );
    let hot = tmp(
        "hot.json",
        &format!(
            r#"{{"logits": {{"shape": [1, 3, 2, 2], "data": {z}}},
                "target": {{"shape": [1, 3, 2, 2], "data": [1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0]}},
                "mask": {{"shape": [1, 3, 2, 2], "data": [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]}}}}"#
        ),
    );
    let value = |args: &[&str]| -> f64 {
        let o = lossc(args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["value"].as_f64().unwrap()
    };
    let a = value(&[
        "eval",
        "softmax_ce",
        "--inputs",
        labels.to_str().unwrap(),
        "--set",
        "ignore_index=255",
    ]);
    let b = value(&["eval", "softmax_ce", "--inputs", hot.to_str().unwrap()]);
    assert!((a - b).abs() <= 1e-15, "{a} vs {b}");
    // Without the ignore value, 255 is a label error naming the input, value and index.
    let o = lossc(&["eval", "softmax_ce", "--inputs", labels.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`target`") && err.contains("255") && err.contains("[0, 1, 0]"),
        "{err}"
    );
}

/// `--set reduction=none` prints one value per (b, c) under "values" (their mean is the
/// `image` loss, their sum the value); `--set weight=...` takes a list, all-ones changes nothing,
/// a wrong length names the axis; `lossc list` shows the vector parameter.
#[test]
fn eval_prints_unreduced_values_and_takes_class_weights() {
    let case = tmp(
        "unreduced.json",
        r#"{"logits": {"shape": [2, 2, 2, 2], "data": [0.5, -1, 2, 0.1, 1, 0.3, -0.2, 0.7, -0.5, 0.9, 0.4, -1.2, 0.2, 0.8, -0.3, 1.5]},
            "target": {"shape": [2, 2, 2, 2], "data": [1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1]}}"#,
    );
    let run = |args: &[&str]| -> serde_json::Value {
        let o = lossc(args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        serde_json::from_str(&out).unwrap()
    };
    let path = case.to_str().unwrap();
    let none = run(&["eval", "dice", "--inputs", path, "--set", "reduction=none"]);
    let image = run(&["eval", "dice", "--inputs", path, "--set", "reduction=image"]);
    assert_eq!(none["values"]["shape"], serde_json::json!([2, 2]));
    let values: Vec<f64> = none["values"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (sum, mean) = (values.iter().sum::<f64>(), values.iter().sum::<f64>() / 4.0);
    assert!((mean - image["value"].as_f64().unwrap()).abs() <= 1e-15);
    assert!((sum - none["value"].as_f64().unwrap()).abs() <= 1e-15);
    assert!(image.get("values").is_none());

    let plain = run(&["eval", "softmax_ce", "--inputs", path]);
    let ones = run(&[
        "eval",
        "softmax_ce",
        "--inputs",
        path,
        "--set",
        "weight=1,1",
    ]);
    let weighted = run(&[
        "eval",
        "softmax_ce",
        "--inputs",
        path,
        "--set",
        "weight=1,3",
    ]);
    assert_eq!(plain["value"], ones["value"]);
    assert_ne!(plain["value"], weighted["value"]);
    let o = lossc(&[
        "eval",
        "softmax_ce",
        "--inputs",
        path,
        "--set",
        "weight=1,2,3",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`weight`") && err.contains("axis C (2 for these shapes)"),
        "{err}"
    );
    let (out, _) = text(&lossc(&["list"]));
    assert!(out.contains("weight: [C] in [0, 1000000] = 1"), "{out}");
}

/// `check --set` gradient-checks losses at chosen parameters: `reduction = none` (the seed input
/// drawn like any optional input) and class weights; a parameter no checked loss declares fails.
#[test]
fn check_takes_parameters() {
    let o = lossc(&[
        "check",
        "losses/dice.loss",
        "losses/softmax_ce.loss",
        "--set",
        "reduction=none",
        "--set",
        "weight=0.5,2",
        "--set",
        "weight_norm=weights",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    let o = lossc(&["check", "losses/dice.loss", "--set", "gamma=2"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("`--set gamma=2`"), "{err}");
}

/// `lossc explain` takes a code in any case and short form, and refuses an unknown one.
#[test]
fn explain_describes_a_code() {
    let out = lossc(&["explain", "e9"]);
    let (text, _) = text(&out);
    assert!(
        out.status.success() && text.starts_with("E0009: a differentiable input"),
        "{text}"
    );
    assert!(!lossc(&["explain", "E9999"]).status.success());
}

#[test]
fn eval_prints_a_composites_terms_beside_the_total() {
    let inputs = r#"{"logits": {"shape": [1, 1, 2, 3], "data": [0.5, -1.0, 2.0, 0.0, 1.5, -0.3]},
                    "target": {"shape": [1, 1, 2, 3], "data": [1, 0, 1, 0, 1, 1]}}"#;
    let p = tmp("terms.json", inputs);
    let eval = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["eval"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--inputs", p.to_str().unwrap()]);
        let o = lossc(&all);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let v = eval(&[
        "dice_ce",
        "--set",
        "lambda_dice=0.5",
        "--set",
        "lambda_ce=2",
    ]);
    let (dice, bce) = (
        eval(&["dice"])["value"].as_f64().unwrap(),
        eval(&["bce"])["value"].as_f64().unwrap(),
    );
    let t = &v["terms"];
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-12 * b.abs();
    assert!(
        close(&t["dice"]["value"], dice) && close(&t["dice"]["weighted"], 0.5 * dice),
        "{v}"
    );
    assert!(
        close(&t["ce"]["value"], bce) && close(&t["ce"]["weighted"], 2.0 * bce),
        "{v}"
    );
    assert!(close(&v["value"], 0.5 * dice + 2.0 * bce), "{v}");
    assert!(eval(&["dice"]).get("terms").is_none());
}

/// `bench --via burn`: a training step through the burn adapter beside the same loss in burn
/// ops, the two values the same loss's (the adapter's and burn's arithmetic agree).
#[cfg(feature = "burn")]
#[test]
fn bench_via_burn_times_the_adapter_beside_burn_ops() {
    for (loss, shape) in [
        ("losses/dice.loss", "2,1,16,16"),
        ("losses/softmax_ce.loss", "2,3,8,8"),
    ] {
        let o = lossc(&[
            "bench", loss, "--shape", shape, "--iters", "2", "--via", "burn",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["via"], "burn", "{out}");
        let (ours, theirs) = (
            v["value"].as_f64().unwrap(),
            v["burn_ops_value"].as_f64().unwrap(),
        );
        assert!(
            (ours - theirs).abs() < 1e-5,
            "{loss}: {ours} vs burn ops {theirs}"
        );
        assert_eq!(v["values_agree"], true, "{out}");
        assert!(v["speedup"].as_f64().unwrap() > 0.0, "{out}");
    }
    // A loss without a burn-ops version is timed alone, and says so.
    let o = lossc(&[
        "bench",
        "losses/tversky.loss",
        "--shape",
        "2,1,8,8",
        "--iters",
        "1",
        "--via",
        "burn",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("\"burn_ops\":\"none for this loss"), "{out}");
}

#[cfg(not(feature = "burn"))]
#[test]
fn bench_via_burn_without_the_feature_says_how_to_build_it() {
    let o = lossc(&[
        "bench",
        "losses/dice.loss",
        "--shape",
        "2,1,8,8",
        "--via",
        "burn",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("--features burn"), "{err}");
}
