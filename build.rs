//! Embeds every `losses/*.loss` file into the crate (the standard library), so adding a loss
//! file needs no code change.
use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new("losses");
    println!("cargo:rerun-if-changed=losses");
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension().and_then(|x| x.to_str()) == Some("loss"))
                        .then(|| {
                            p.file_stem()
                                .and_then(|s| s.to_str())
                                .map(|s| s.to_string())
                        })
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from("/// (name, source) of every file in `losses/`, sorted by name.\npub const STDLIB: &[(&str, &str)] = &[\n");
    for n in &names {
        println!("cargo:rerun-if-changed=losses/{n}.loss");
        out.push_str(&format!("    ({n:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/losses/{n}.loss\"))),\n"));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("stdlib.rs");
    fs::write(dest, out).expect("write stdlib.rs");

    // Whether this build has the loop interleaving of `.cargo/config.toml` (a RUSTFLAGS variable
    // replaces that file's flags): `lossc bench` reports it as `kernel_loops`.
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let interleaved = flags
        .split('\x1f')
        .any(|f| f.ends_with("-force-vector-interleave=2"));
    let loops = if interleaved { "interleaved" } else { "plain" };
    println!("cargo:rustc-env=LOSSLANG_KERNEL_LOOPS={loops}");
}
