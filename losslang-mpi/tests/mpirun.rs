//! `mpirun -np 2`: each rank evaluates its half of a batch through `losslang_mpi`, and must get
//! the single-process value and gradient of the whole batch bit for bit.
//!
//! Run plainly (as `cargo test` does), this binary starts `mpirun -np 2` on itself and checks
//! both ranks passed; started by mpirun (`OMPI_COMM_WORLD_SIZE` is set), it is a rank.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, Axis, IxDyn};
use losslang::{Library, Loss, Real};
use losslang_mpi::mpi::traits::{Communicator, Equivalence};
use losslang_mpi::{shard, value_and_grad, Error};
use std::process::Command;

/// Losses whose value needs the whole batch's sums (a batch dice, class weights from the
/// batch's counts), and a pixel mean, with the reduction that makes them batch-wide.
const LOSSES: &[(&str, &[(&str, &str)])] = &[
    ("dice", &[("reduction", "batch")]),
    ("dice_ce", &[]),
    ("generalized_dice", &[]),
    ("tversky", &[("reduction", "image")]),
    ("bce", &[]),
];

fn main() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        rank();
    } else {
        launch();
    }
}

/// Starts two ranks of this binary and checks each reported success.
fn launch() {
    let me = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("mpirun");
    // `--oversubscribe`: two ranks even where MPI counts fewer slots; as root (CI containers)
    // Open MPI refuses to start without the two variables.
    cmd.args(["-np", "2", "--oversubscribe"])
        .arg(&me)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Shared-memory transport without the cross-memory-attach syscalls containers forbid.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "mpirun could not be started ({e}): this test needs Open MPI \
                 (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run installs it)"
            );
            std::process::exit(1);
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let passed = (0..2)
        .filter(|r| stdout.contains(&format!("rank {r} of 2: all equal")))
        .count();
    if !out.status.success() || passed != 2 {
        eprintln!(
            "mpirun -np 2 failed ({}; {passed} of 2 ranks passed)",
            out.status
        );
        std::process::exit(1);
    }
    println!("test mpirun_two_ranks_equal_one_process ... ok");
}

fn rank() {
    let universe = losslang_mpi::mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let (r, size) = (world.rank() as usize, world.size() as usize);
    for (k, (name, params)) in LOSSES.iter().enumerate() {
        let mut loss = Library::standard().get(name).unwrap();
        for (p, v) in *params {
            loss = loss.set(p, *v).unwrap();
        }
        // Five images: the ranks' shards differ in size (3 and 2).
        let all = batch(&[5, 3, 9, 11], 70 + k as u64);
        check::<f64, _>(&world, &loss, &all, r, size, name);
        check::<f32, _>(&world, &loss, &all, r, size, name);
    }
    // A rank whose call fails makes every other rank's call fail too, instead of hanging.
    let loss = Library::standard().get("dice").unwrap();
    let all = batch(&[4, 1, 6, 6], 9);
    let part = images(&all, shard(4, size, r));
    let mut plan = compile::<f64>(&loss, &part);
    let views: Vec<_> = part.iter().map(|(k, a)| (*k, a.view())).collect();
    // Rank 1 claims images past the batch's end.
    let first = if r == 1 { 7 } else { shard(4, size, r).start };
    match (r, value_and_grad(&world, &mut plan, &views, first, 4)) {
        (1, Err(Error::Loss(losslang::Error::Shape { .. }))) => {}
        (0, Err(Error::OtherRank { rank: 1 })) => {}
        (_, other) => panic!("rank {r}: expected the failed rank's error, got {other:?}"),
    }
    println!("rank {r} of {size}: all equal");
}

/// This rank's half through MPI against the single process's whole batch.
fn check<T: Real + Equivalence, C: Communicator>(
    world: &C,
    loss: &Loss,
    all: &[(&'static str, ArrayD<f64>)],
    r: usize,
    size: usize,
    name: &str,
) {
    let b = all[0].1.shape()[0];
    let mine = shard(b, size, r);
    let part = images(all, mine.clone());
    let mut plan = compile::<T>(loss, &part);
    let views: Vec<_> = part.iter().map(|(k, a)| (*k, a.view())).collect();
    let step = value_and_grad(world, &mut plan, &views, mine.start, b).unwrap();
    let grad = step.grad("logits").expect("logits are differentiable");

    // The single process: the whole batch on this rank alone, through the same split-phase
    // path (statistics of one shard that is the batch).
    let whole = images(all, 0..b);
    let mut one = compile::<T>(loss, &whole);
    let views: Vec<_> = whole.iter().map(|(k, a)| (*k, a.view())).collect();
    let stats = one.statistics(&views, 0, b).unwrap();
    let fin = one.finish(&stats).unwrap();
    let out = one.backward(&views, &fin, 0).unwrap();
    let want = out.grad("logits").slice_axis(Axis(0), mine.clone().into());
    assert_eq!(
        step.value.to_f64().to_bits(),
        fin.value.to_f64().to_bits(),
        "rank {r} {name}: value {} vs {}",
        step.value.to_f64(),
        fin.value.to_f64()
    );
    assert_eq!(grad.shape(), want.shape());
    let differ = grad
        .iter()
        .zip(want.iter())
        .filter(|(a, b)| a.to_f64().to_bits() != b.to_f64().to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "rank {r} {name}: {differ} gradient elements differ"
    );
    assert!(
        grad.iter().any(|g| g.to_f64() != 0.0),
        "rank {r} {name}: a zero gradient exercises nothing"
    );

    // And the ordinary (fused) plan of the whole batch gives the same loss to rounding.
    let mut plain = compile::<T>(loss, &whole);
    let v = plain.value_and_grad(&views).unwrap().value.to_f64();
    let tol = if std::mem::size_of::<T>() == 4 {
        1e-5
    } else {
        1e-12
    };
    assert!(
        (v - step.value.to_f64()).abs() <= tol * (1.0 + v.abs()),
        "rank {r} {name}: fused {v} vs data-parallel {}",
        step.value.to_f64()
    );
}

fn compile<T: Real>(loss: &Loss, inputs: &[(&'static str, ArrayD<T>)]) -> losslang::Plan<T> {
    let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(k, a)| (*k, a.shape())).collect();
    loss.compile::<T>(&shapes).unwrap()
}

/// Images `range` of every input, in precision `T`.
fn images<T: Real>(
    all: &[(&'static str, ArrayD<f64>)],
    range: std::ops::Range<usize>,
) -> Vec<(&'static str, ArrayD<T>)> {
    all.iter()
        .map(|(k, a)| {
            let part = a.slice_axis(Axis(0), range.clone().into());
            (*k, part.mapv(T::from_f64))
        })
        .collect()
}

/// Logits, a binary target and a mask, the same on every rank (a fixed seed).
fn batch(shape: &[usize], seed: u64) -> Vec<(&'static str, ArrayD<f64>)> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let z = (0..n).map(|_| 2.0 * rng.normal()).collect();
    let y = (0..n).map(|_| f64::from(rng.uniform() < 0.4)).collect();
    let m = (0..n).map(|_| f64::from(rng.uniform() < 0.85)).collect();
    vec![
        ("logits", ArrayD::from_shape_vec(IxDyn(shape), z).unwrap()),
        ("target", ArrayD::from_shape_vec(IxDyn(shape), y).unwrap()),
        ("mask", ArrayD::from_shape_vec(IxDyn(shape), m).unwrap()),
    ]
}
