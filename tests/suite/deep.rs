//! Deep supervision (`DeepSupervision`): the weighted sum over decoder depths of the loss
//! against the target resized to each depth, checked against plain plans on targets resized
//! here by hand (block means, centre pixels), with MONAI's weight modes.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{DeepSupervision, DeepWeights, Error, Library, Resize};

fn normal(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| 1.5 * rng.normal()).collect()).unwrap()
}

/// `[B, 1, H, W]` → `[B, 1, H/f, W/f]`: the mean of each f × f block.
fn block_mean(y: &ArrayD<f64>, f: usize) -> ArrayD<f64> {
    let s = y.shape();
    let (b, h, w) = (s[0], s[2] / f, s[3] / f);
    ArrayD::from_shape_fn(IxDyn(&[b, 1, h, w]), |ix| {
        let mut sum = 0.0;
        for di in 0..f {
            for dj in 0..f {
                sum += y[[ix[0], 0, ix[2] * f + di, ix[3] * f + dj]];
            }
        }
        sum / (f * f) as f64
    })
}

/// `[B, H, W]` labels → `[B, H/f, W/f]`: the pixel at `f i + f/2` (the centre one, what
/// `floor((i + 0.5) f)` picks).
fn centre_pick(y: &ArrayD<f64>, f: usize) -> ArrayD<f64> {
    let s = y.shape();
    ArrayD::from_shape_fn(IxDyn(&[s[0], s[1] / f, s[2] / f]), |ix| {
        y[[ix[0], ix[1] * f + f / 2, ix[2] * f + f / 2]]
    })
}

/// The plain plan's value and gradient of `loss` on (logits, target).
fn plain(name: &str, set: &[(&str, f64)], z: &ArrayD<f64>, y: &ArrayD<f64>) -> (f64, ArrayD<f64>) {
    let mut loss = Library::standard().get(name).unwrap();
    for (k, v) in set {
        loss = loss.set(k, *v).unwrap();
    }
    let mut plan = loss
        .compile::<f64>(&[("logits", z.shape()), ("target", y.shape())])
        .unwrap();
    let out = plan
        .value_and_grad(&[("logits", z.view()), ("target", y.view())])
        .unwrap();
    (out.value, out.grad("logits").clone())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
}

fn max_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Runs `ds` on `outs` against `y`, then checks each depth's value and gradient against a plain
/// plan of `name` on `targets[l]` (the target resized by hand), and the weighted total.
fn check_against_plain(
    ds: &DeepSupervision,
    name: &str,
    outs: &[ArrayD<f64>],
    y: &ArrayD<f64>,
    targets: &[ArrayD<f64>],
) -> losslang::DeepValue {
    let mut grads: Vec<ArrayD<f64>> = outs.iter().map(|o| ArrayD::zeros(o.raw_dim())).collect();
    let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
    let mut gviews: Vec<_> = grads.iter_mut().map(|g| g.view_mut()).collect();
    let r = ds
        .value_and_grads_into(&views, y.view(), &mut gviews)
        .unwrap();
    let mut total = 0.0;
    for l in 0..outs.len() {
        let (v, g) = plain(name, &[], &outs[l], &targets[l]);
        assert!(close(r.values[l], v), "depth {l}: {} vs {v}", r.values[l]);
        let want = g.mapv(|x| r.weights[l] * x);
        assert!(max_diff(&grads[l], &want) <= 1e-14, "depth {l} gradient");
        total += r.weights[l] * v;
    }
    assert!(close(r.total, total), "{} vs {total}", r.total);
    r
}

#[test]
fn a_soft_target_is_average_pooled_per_depth_and_weighted_exp() {
    let mut rng = Rng::new(21);
    let outs: Vec<ArrayD<f64>> = [16, 8, 4]
        .iter()
        .map(|&s| normal(&[2, 1, s, s], &mut rng))
        .collect();
    let n = 2 * 16 * 16;
    let y = ArrayD::from_shape_vec(
        IxDyn(&[2, 1, 16, 16]),
        (0..n).map(|_| f64::from(rng.uniform() < 0.3)).collect(),
    )
    .unwrap();
    let ds =
        DeepSupervision::new(Library::standard().get("dice").unwrap(), DeepWeights::Exp).unwrap();
    let targets = [y.clone(), block_mean(&y, 2), block_mean(&y, 4)];
    let r = check_against_plain(&ds, "dice", &outs, &y, &targets);
    assert_eq!(r.weights, [1.0, 0.5, 0.25]);
    // The soft targets are fractions: the pooled depth is not the binary nearest pick.
    assert!(targets[1].iter().any(|&t| t > 0.0 && t < 1.0));
}

#[test]
fn class_labels_take_the_centre_pixel_with_given_weights() {
    let mut rng = Rng::new(5);
    let outs: Vec<ArrayD<f64>> = [12, 6, 3]
        .iter()
        .map(|&s| normal(&[2, 3, s, s], &mut rng))
        .collect();
    let y = ArrayD::from_shape_vec(
        IxDyn(&[2, 12, 12]),
        (0..2 * 144)
            .map(|_| (rng.uniform() * 3.0).floor().min(2.0))
            .collect(),
    )
    .unwrap();
    let loss = Library::standard().get("softmax_ce").unwrap();
    let ds = DeepSupervision::new(loss, DeepWeights::Given(vec![1.0, 0.3, 0.2])).unwrap();
    let targets = [y.clone(), centre_pick(&y, 2), centre_pick(&y, 4)];
    check_against_plain(&ds, "softmax_ce", &outs, &y, &targets);
    let mut grads: Vec<ArrayD<f64>> = outs.iter().map(|o| ArrayD::zeros(o.raw_dim())).collect();
    let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
    // Forced average pooling of labels is refused; so are a wrong number of buffers or weights.
    let ds = DeepSupervision::new(
        Library::standard().get("softmax_ce").unwrap(),
        DeepWeights::Two,
    )
    .unwrap()
    .resize(Resize::AvgPool);
    let mut gviews: Vec<_> = grads.iter_mut().map(|g| g.view_mut()).collect();
    assert!(matches!(
        ds.value_and_grads_into(&views, y.view(), &mut gviews),
        Err(Error::Shape { .. })
    ));
    let ds = DeepSupervision::new(
        Library::standard().get("softmax_ce").unwrap(),
        DeepWeights::Two,
    )
    .unwrap();
    assert!(matches!(
        ds.value_and_grads_into(&views, y.view(), &mut gviews[..2]),
        Err(Error::Shape { .. })
    ));
    let ds = DeepSupervision::new(
        Library::standard().get("softmax_ce").unwrap(),
        DeepWeights::Given(vec![1.0]),
    )
    .unwrap();
    assert!(matches!(
        ds.value_and_grads_into(&views, y.view(), &mut gviews),
        Err(Error::ParamValue { .. })
    ));
}
