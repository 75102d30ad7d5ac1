//! Classifies the held-out handwritten digits with the float model and with the quantized model
//! embedded at build time, prints both accuracies, the model sizes and the binary size, and
//! exits with status 1 when quantization costs more accuracy than `--max-drop` (percentage
//! points, default 1.0).
//!
//! ```sh
//! cargo run --release -p digits                 # from the repository root
//! cargo run --release -p digits -- --max-drop 0.5 --data examples/digits/models
//! ```

mod npy;

use std::path::PathBuf;
use std::process::ExitCode;

use quantize_rs::{EmbeddedModel, include_quantized};
use tract_onnx::prelude::*;

/// The quantized model, embedded: `include_bytes!` of the file quantize-build wrote.
static DIGITS: EmbeddedModel = include_quantized!("digits");
/// The same model at 4 bits (INT4, blocked), which tract runs after widening it at load.
static DIGITS_INT4: EmbeddedModel = include_quantized!("digits-int4");

struct Args {
    data: PathBuf,
    max_drop: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")), max_drop: 1.0 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--data" => args.data = PathBuf::from(value()?),
            "--max-drop" => {
                let v = value()?;
                args.max_drop = v.parse().map_err(|_| format!("--max-drop: '{v}' is not a number"))?;
            }
            "-h" | "--help" => {
                println!("usage: digits [--data DIR] [--max-drop POINTS]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'; try --help")),
        }
    }
    Ok(args)
}

/// Predicted class of each row of `pixels` ([n, 64]).
fn predict(model: &std::sync::Arc<TypedRunnableModel>, pixels: &npy::Array<f32>) -> TractResult<Vec<usize>> {
    let input = Tensor::from_shape(&pixels.shape, &pixels.data)?;
    let outputs = model.run(tvec!(input.into()))?;
    let logits = outputs[0].to_plain_array_view::<f32>()?;
    Ok(logits
        .outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                .0
        })
        .collect())
}

fn accuracy(predicted: &[usize], labels: &[i64]) -> f64 {
    let right = predicted.iter().zip(labels).filter(|(p, l)| **p as i64 == **l).count();
    100.0 * right as f64 / labels.len().max(1) as f64
}

/// Formats a tract error with its causes.
fn err(what: &'static str) -> impl Fn(TractError) -> String {
    move |e| format!("{what}: {e:?}")
}

fn run(args: &Args) -> Result<bool, String> {
    let pixels = npy::read(&args.data.join("digits-test.npy"), "<f4", f32::from_le_bytes)?;
    let labels = npy::read(&args.data.join("digits-test-labels.npy"), "<i8", i64::from_le_bytes)?;
    if pixels.shape.len() != 2 || pixels.shape[0] != labels.data.len() {
        return Err(format!("test split: {:?} images for {} labels", pixels.shape, labels.data.len()));
    }
    let float_path = args.data.join("digits.onnx");
    let float_bytes = std::fs::read(&float_path).map_err(|e| format!("{}: {e}", float_path.display()))?;
    let float_model = tract_onnx::onnx()
        .model_for_read(&mut &float_bytes[..])
        .and_then(|m| m.into_optimized()?.into_runnable())
        .map_err(err("float model"))?;
    let quantized_model = DIGITS.tract_runnable().map_err(err("embedded model"))?;
    let int4_model = DIGITS_INT4.tract_runnable().map_err(err("embedded 4-bit model"))?;

    let float_pred = predict(&float_model, &pixels).map_err(err("float model"))?;
    let quant_pred = predict(&quantized_model, &pixels).map_err(err("embedded model"))?;
    let int4_pred = predict(&int4_model, &pixels).map_err(err("embedded 4-bit model"))?;
    let (float_acc, quant_acc) = (accuracy(&float_pred, &labels.data), accuracy(&quant_pred, &labels.data));
    let agree = float_pred.iter().zip(&quant_pred).filter(|(a, b)| a == b).count();
    let drop = float_acc - quant_acc;

    println!("model {} ({}), embedded with include_quantized!", DIGITS.name, DIGITS.recipe.scheme);
    for t in DIGITS.inputs {
        println!("  input  {t}");
    }
    for t in DIGITS.outputs {
        println!("  output {t}");
    }
    println!("test split: {} images from scikit-learn's digits set", labels.data.len());
    println!("  float32    {:>8} bytes  accuracy {float_acc:.2}%", float_bytes.len());
    println!(
        "  quantized  {:>8} bytes  accuracy {quant_acc:.2}%  ({:.2}x smaller, {agree}/{} predictions unchanged)",
        DIGITS.bytes.len(),
        float_bytes.len() as f64 / DIGITS.bytes.len().max(1) as f64,
        labels.data.len()
    );
    println!(
        "  4-bit      {:>8} bytes  accuracy {:.2}%  ({}; informational, not gated)",
        DIGITS_INT4.bytes.len(),
        accuracy(&int4_pred, &labels.data),
        DIGITS_INT4.recipe.scheme
    );
    if let Some(q) = DIGITS.quality {
        println!("  build-time check on {} samples: SNR {:.1} dB, cosine {:.5}", q.samples, q.snr_db, q.cosine);
    }
    if let Ok(size) = std::env::current_exe().and_then(std::fs::metadata).map(|m| m.len()) {
        println!("binary size {size} bytes");
    }
    let ok = drop <= args.max_drop;
    println!("accuracy drop {drop:.2} points: {} (limit {:.2})", if ok { "ok" } else { "TOO LARGE" }, args.max_drop);
    Ok(ok)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
