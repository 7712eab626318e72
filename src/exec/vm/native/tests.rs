//! The generator of `generated.rs` and its freshness check, and the native kernels' bits
//! against the bytecode's.

use crate::api::{ExecutorKind, Library, Loss, Plan};

/// The shapes the standard library's passes are generated for: 2-D and 3-D, one class and
/// several (the keys do not depend on sizes otherwise; a pass bound at other shapes whose key
/// differs runs as bytecode).
const SHAPES: &[&[usize]] = &[&[4, 1, 64, 64], &[2, 3, 16, 16], &[2, 1, 8, 8, 8]];

/// The inputs of `loss` bound at `shape` (`[B, C, ..S]`; an input with fewer axes takes their
/// sizes): the required ones, or with `all` every one (`None` if it has no optional input).
fn input_shapes(loss: &Loss, shape: &[usize], all: bool) -> Option<Vec<(String, Vec<usize>)>> {
    let space = &loss.signature().space;
    if all && loss.inputs().iter().all(|i| i.default.is_none()) {
        return None;
    }
    let inputs = loss
        .inputs()
        .iter()
        .filter(|i| all || i.default.is_none())
        .map(|i| {
            let mut dims = Vec::new();
            for &a in &i.axes {
                if space.packs[a] {
                    dims.extend_from_slice(&shape[2..]);
                } else {
                    // Plain axes in declaration order: B, then C.
                    let k = (0..a).filter(|&b| !space.packs[b]).count();
                    dims.push(shape[k.min(1)]);
                }
            }
            (i.name.clone(), dims)
        })
        .collect();
    Some(inputs)
}

/// Every standard loss with default parameters at `shape`: required inputs only, then all;
/// and a loss with term weights (`lambda_*` parameters) again with them live (`Loss::live`: a
/// weight schedule keeps native kernels).
fn plans(shape: &[usize], kind: ExecutorKind) -> Vec<(String, Plan<f32>)> {
    let lib = Library::standard();
    let mut out = Vec::new();
    for name in lib.names() {
        let loss = lib.get(name).expect("standard loss");
        let weights: Vec<&str> = loss
            .params()
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| n.starts_with("lambda_"))
            .collect();
        let mut variants = vec![(String::new(), loss.clone())];
        if !weights.is_empty() {
            let live = loss
                .clone()
                .live(&weights)
                .expect("term weights can be live");
            variants.push((" (live weights)".to_string(), live));
        }
        for (how, loss) in &variants {
            for all in [false, true] {
                let Some(inputs) = input_shapes(loss, shape, all) else {
                    continue;
                };
                let shapes: Vec<(&str, &[usize])> = inputs
                    .iter()
                    .map(|(n, d)| (n.as_str(), d.as_slice()))
                    .collect();
                if let Ok(plan) = loss.compile_with::<f32>(&shapes, kind) {
                    let what = if all { " (all inputs)" } else { "" };
                    out.push((format!("{name}{how}{what}"), plan));
                }
            }
        }
    }
    out
}

/// The module the standard library's passes generate: kernels in order of first use, each with
/// the (loss, shape, pass) that use it.
fn generate() -> String {
    let mut kernels: Vec<(String, Vec<String>, String)> = Vec::new();
    for shape in SHAPES {
        for (name, mut plan) in plans(shape, ExecutorKind::Fused) {
            for (which, p, entry) in plan.native_listing() {
                let Some((key, body)) = entry else { continue };
                let used = format!("{name} {shape:?}: {which}, pass {p}");
                match kernels.iter_mut().find(|k| k.0 == key) {
                    Some(k) => k.1.push(used),
                    None => kernels.push((key, vec![used], body)),
                }
            }
        }
    }
    super::emit::module(&kernels)
}

#[test]
fn native_kernels_are_fresh() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/exec/vm/native/generated.rs"
    );
    let want = generate();
    if std::env::var_os("LOSSLANG_BLESS").is_some() {
        std::fs::write(path, &want).expect("write generated.rs");
        return;
    }
    let have = std::fs::read_to_string(path).expect("read generated.rs");
    assert!(
        have == want,
        "src/exec/vm/native/generated.rs is stale: a loss, the optimiser or code generation \
         changed the standard library's passes. Regenerate it with \
         `scripts/regen-native.sh`."
    );
}

/// Whether a standard loss uses window ops (its passes then run between window ops, as bytecode:
/// native kernels cover the standard library's fused-only plans).
fn window_loss(name: &str) -> bool {
    let loss = Library::standard().get(name).expect("standard loss");
    let shapes = [
        ("logits", &[2usize, 1, 16, 16][..]),
        ("target", &[2, 1, 16, 16][..]),
    ];
    // A shape error here is a side smaller than a window (ms_ssim's five scales need 161).
    loss.compile::<f32>(&shapes).map_or(true, |p| {
        p.executor() != crate::ExecutorKind::Fused || p.pass_info().iter().any(|i| i.unrolled)
    })
}

/// Value and gradient bits of `name` at `shape` with executor `kind` (instruction set capped by
/// `isa`), and whether any pass ran a native kernel.
fn bits<T: crate::Real>(
    name: &str,
    shape: &[usize],
    kind: ExecutorKind,
    isa: crate::Isa,
    value_only: bool,
    all: bool,
) -> (Vec<u64>, bool) {
    use crate::api::gradcheck::Rng;
    use ndarray::{ArrayD, IxDyn};
    let loss = Library::standard().get(name).expect("standard loss");
    let Some(inputs) = input_shapes(&loss, shape, all) else {
        return (Vec::new(), true);
    };
    let mut rng = Rng::new(7 + shape.iter().product::<usize>() as u64);
    let arrays: Vec<(String, ArrayD<T>)> = inputs
        .iter()
        .map(|(name, dims)| {
            let spec = loss
                .inputs()
                .iter()
                .find(|i| &i.name == name)
                .expect("input");
            let n: usize = dims.iter().product();
            let data = (0..n)
                .map(|_| {
                    T::from_f64(if spec.diff {
                        3.0 * rng.normal()
                    } else if rng.uniform() < 0.3 {
                        1.0
                    } else {
                        0.0
                    })
                })
                .collect();
            (
                name.clone(),
                ArrayD::from_shape_vec(IxDyn(dims), data).unwrap(),
            )
        })
        .collect();
    let shapes: Vec<(&str, &[usize])> = inputs
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_slice()))
        .collect();
    let mut plan = loss.compile_with::<T>(&shapes, kind).expect("compiles");
    plan.cap_instruction_set(isa);
    let views: Vec<(&str, ndarray::ArrayViewD<T>)> =
        arrays.iter().map(|(k, a)| (k.as_str(), a.view())).collect();
    if value_only {
        let v = plan.value(&views).expect("runs");
        let native = plan.value_pass_kernels().contains(&crate::Kernel::Native);
        return (vec![v.to_f64().to_bits()], native);
    }
    let native = plan
        .pass_info()
        .iter()
        .any(|p| p.kernel == crate::Kernel::Native);
    let out = plan.value_and_grad(&views).expect("runs");
    let mut b = vec![out.value.to_f64().to_bits()];
    for (_, g) in out.grads() {
        b.extend(g.iter().map(|x| x.to_f64().to_bits()));
    }
    (b, native)
}

/// Native kernels change no bits: every standard loss, value-and-gradient and value-only plans,
/// f32 and f64, on each instruction-set path, at shapes with ragged steps and blocks (45 and 700
/// lanes per row), several planes and classes, and one size large enough for streamed outputs.
/// And they run: every loss has a native pass at these shapes.
#[test]
fn native_kernels_give_the_bytecode_bits() {
    let big: &[usize] = &[1, 1, 2048, 1100]; // > STREAM_MIN elements
    let shapes: &[&[usize]] = &[&[3, 1, 37, 45], &[2, 2, 700], &[2, 3, 5, 4, 33], big];
    let lib = Library::standard();
    let mut compared = 0;
    for name in lib.names() {
        if window_loss(name) {
            continue; // staged or unrolled over classes: no native kernels apply
        }
        for &shape in shapes {
            if shape == big && !["bce", "dice", "combo"].contains(&name) {
                continue;
            }
            for isa in [crate::Isa::Avx512, crate::Isa::Avx2, crate::Isa::Baseline] {
                for (value_only, all) in [(false, false), (true, false), (false, true)] {
                    let run = |kind, f64_: bool| {
                        if f64_ {
                            bits::<f64>(name, shape, kind, isa, value_only, all)
                        } else {
                            bits::<f32>(name, shape, kind, isa, value_only, all)
                        }
                    };
                    let (n32, ran32) = run(ExecutorKind::Fused, false);
                    let (b32, _) = run(ExecutorKind::FusedBytecode, false);
                    let (n64, ran64) = run(ExecutorKind::Fused, true);
                    let (b64, _) = run(ExecutorKind::FusedBytecode, true);
                    let what = match (value_only, all) {
                        (true, _) => "value",
                        (false, false) => "value and gradient",
                        (false, true) => "value and gradient, all inputs",
                    };
                    assert!(ran32 && ran64, "{name} {shape:?} {what}: no native pass");
                    assert!(
                        n32 == b32,
                        "{name} {shape:?} f32 {isa} {what}: native bits differ"
                    );
                    assert!(
                        n64 == b64,
                        "{name} {shape:?} f64 {isa} {what}: native bits differ"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 100, "compared {compared} cases");
}
