//! Users' own loss files keep working as the standard library grows: every file in
//! `tests/user_losses/` (user-style losses: their own helpers beside the library's, narrower
//! option lists, list defaults, neighbour ops) compiles, runs and passes its gradient check.
//! And name clashes are never settled silently.

use losslang::{Error, Loss};

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/user_losses")
}

#[test]
fn every_held_user_file_compiles_and_passes_its_gradient_check() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "loss") {
            continue;
        }
        let loss = Loss::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = loss
            .gradcheck(&Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(report.passed, "{}: {report:?}", path.display());
        n += 1;
    }
    assert!(n >= 4, "only {n} user files");
}

#[test]
fn a_list_default_is_the_same_as_setting_the_list() {
    let path = dir().join("class_weights.loss");
    let a = Loss::from_file(&path).unwrap();
    let b = Loss::from_file(&path)
        .unwrap()
        .set("w", vec![1.0, 3.0])
        .unwrap();
    let shape = [1usize, 2, 2, 2];
    let z = losslang::ndarray::ArrayD::from_shape_vec(
        shape.to_vec(),
        vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8],
    )
    .unwrap();
    let y = losslang::ndarray::ArrayD::from_shape_vec(
        shape.to_vec(),
        vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
    )
    .unwrap();
    let eval = |l: &Loss| {
        let mut p = l
            .compile::<f64>(&[("logits", &shape[..]), ("target", &shape[..])])
            .unwrap();
        p.value_and_grad(&[("logits", z.view()), ("target", y.view())])
            .unwrap()
            .value
    };
    // By hand: mean over 8 elements of w_c (softplus(z) - y z), w = [1, 3] over C.
    let sp = |x: f64| (1.0 + x.exp()).ln();
    let want: f64 = z
        .iter()
        .zip(y.iter())
        .enumerate()
        .map(|(i, (&z, &y))| if i < 4 { 1.0 } else { 3.0 } * (sp(z) - y * z))
        .sum::<f64>()
        / 8.0;
    assert!((eval(&a) - want).abs() < 1e-14, "{} vs {want}", eval(&a));
    assert_eq!(eval(&a).to_bits(), eval(&b).to_bits());
    // A list default of the wrong length is an error when shapes bind.
    let c = [1usize, 3, 2, 2];
    assert!(matches!(
        a.compile::<f64>(&[("logits", &c[..]), ("target", &c[..])]),
        Err(Error::ParamValue { .. })
    ));
}

/// Two used files defining one name: an error at the `use` naming both, not a silent pick.
#[test]
fn two_used_files_defining_one_name_is_an_error_at_the_use() {
    let tmp = std::env::temp_dir().join(format!("losslang-user-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("mine.loss"), "fn softmax(x) = exp(x)\n").unwrap();
    let src = "use common, mine\n\nloss t {\n    input logits: [B, C, ..S] diff\n    return mean(softmax(logits))\n}\n";
    match Loss::from_source_in("t", src, Some(&tmp)) {
        Err(Error::Compile {
            rendered, codes, ..
        }) => {
            assert!(codes.contains(&"E0011"), "{rendered}");
            assert!(
                rendered.contains("`softmax` is defined by both"),
                "{rendered}"
            );
            assert!(rendered.contains("t:1:13"), "{rendered}");
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("a clash between two used files was settled silently"),
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// An arm for an option the parameter lacks is still an error in the user's own file.
#[test]
fn an_unknown_arm_in_the_users_own_match_is_an_error_there() {
    let src = "loss t {\n    input logits: [B, C, ..S] diff\n    param reduction: batch | image = image\n    return mean(sum(logits, over = match reduction { batch => [B, C, S], imag => [S] }))\n}\n";
    match Loss::from_source_in("t", src, None) {
        Err(Error::Compile { rendered, .. }) => {
            assert!(rendered.contains("t:4:74"), "{rendered}");
            assert!(rendered.contains("`imag` is not an option"), "{rendered}");
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("accepted an unknown arm"),
    }
}
