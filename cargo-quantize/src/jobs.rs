//! Running many quantization jobs (`batch`, `config`): a fixed number of worker threads take
//! jobs in order; each job is skipped, written, or failed, and says so in one line on stderr
//! as it finishes. Without `continue_on_error`, the first failure stops the queue: jobs not yet
//! started are reported as `not-run`, jobs already running finish. Saves are atomic, so a failed
//! or interrupted job never leaves a partial output file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use quantize_rs::human_bytes;
use quantize_rs::{Model, Recipe, RunOptions, SaveOptions};
use serde::Serialize;

/// One model to quantize.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Where the job comes from, for messages: the input path, or `models[1]` in a config file.
    pub key: String,
    /// The float model.
    pub input: PathBuf,
    /// Where the quantized model goes.
    pub output: PathBuf,
    /// What to do.
    pub recipe: Recipe,
    /// Relative data paths in the recipe resolve against this folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Leave the job alone when its output already exists.
    pub skip_existing: bool,
    /// Create the output's folder when it is missing (batch outputs, like `mkdir -p`).
    #[serde(skip)]
    pub create_dir: bool,
}

/// The folder a batch writes into: created when missing (with its parents), refused when the
/// path is a file.
pub fn ensure_output_dir(dir: &Path) -> quantize_rs::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(quantize_rs::Error::Option {
            key: "output folder".into(),
            message: format!("{} is a file, not a folder; choose a folder for the outputs", dir.display()),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| quantize_rs::Error::Write { path: dir.into(), source })
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The output was written.
    Written,
    /// The output existed and `skip_existing` was set.
    Skipped,
    /// The job failed; nothing was written.
    Failed,
    /// Not started, because an earlier job failed.
    NotRun,
}

/// What one job did.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// [`Job::key`].
    pub key: String,
    /// The float model.
    pub input: PathBuf,
    /// The output path.
    pub output: PathBuf,
    /// How it ended.
    pub status: Status,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size of the input file (written jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Size of the output file (written jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Weights quantized (written jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantized_tensors: Option<usize>,
    /// Seconds the job took.
    pub seconds: f64,
}

/// Counts of [`JobResult`]s by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Jobs in all.
    pub total: usize,
    /// Outputs written.
    pub written: usize,
    /// Outputs left as they were.
    pub skipped: usize,
    /// Jobs that failed.
    pub failed: usize,
    /// Jobs never started.
    pub not_run: usize,
}

impl Summary {
    /// Counts `results`.
    pub fn of(results: &[JobResult]) -> Summary {
        let mut s = Summary { total: results.len(), ..Summary::default() };
        for r in results {
            match r.status {
                Status::Written => s.written += 1,
                Status::Skipped => s.skipped += 1,
                Status::Failed => s.failed += 1,
                Status::NotRun => s.not_run += 1,
            }
        }
        s
    }

    /// `4 job(s): 2 written, 1 skipped, 1 failed, 0 not run`.
    pub fn to_text(&self) -> String {
        format!(
            "{} job(s): {} written, {} skipped, {} failed, {} not run",
            self.total, self.written, self.skipped, self.failed, self.not_run
        )
    }
}

/// How [`run_jobs`] runs.
#[derive(Debug, Clone, Copy)]
pub struct RunJobsOptions {
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Keep going after a failure.
    pub continue_on_error: bool,
    /// Allow an output to be its own input.
    pub force: bool,
    /// Print one line per job on stderr.
    pub progress: bool,
}

/// Refuses two jobs writing the same file (after resolving `.` and `..` in their paths).
pub fn check_distinct_outputs(jobs: &[Job]) -> Result<(), String> {
    let mut seen: BTreeMap<PathBuf, &Job> = BTreeMap::new();
    for j in jobs {
        let key = normalize(&j.output);
        if let Some(other) = seen.insert(key, j) {
            return Err(format!(
                "{} and {} would both be written to {}; rename one of the inputs or give them separate output folders",
                other.input.display(),
                j.input.display(),
                j.output.display()
            ));
        }
    }
    Ok(())
}

fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Calls `work(i)` for `i` in `0..count` on `threads` threads, taking indices in order, and
/// returns the results in index order.
pub fn parallel<R: Send>(count: usize, threads: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        break;
                    }
                    let r = work(i);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().map(|r| r.expect("every index ran")).collect()
}

/// The default `--jobs`: the machine's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Runs `jobs` (see the [module docs](self)).
pub fn run_jobs(jobs: &[Job], opts: &RunJobsOptions) -> Vec<JobResult> {
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let total = jobs.len();
    parallel(total, opts.jobs, |i| {
        let job = &jobs[i];
        let result = if stop.load(Ordering::SeqCst) {
            JobResult::new(job, Status::NotRun, 0.0)
        } else {
            let r = run_one(job, opts.force);
            if r.status == Status::Failed && !opts.continue_on_error {
                stop.store(true, Ordering::SeqCst);
            }
            r
        };
        if opts.progress && result.status != Status::NotRun {
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            eprintln!("[{n}/{total}] {}", result.line());
        }
        result
    })
}

impl JobResult {
    fn new(job: &Job, status: Status, seconds: f64) -> JobResult {
        JobResult {
            key: job.key.clone(),
            input: job.input.clone(),
            output: job.output.clone(),
            status,
            error: None,
            bytes_in: None,
            bytes_out: None,
            quantized_tensors: None,
            seconds,
        }
    }

    /// The job's progress line.
    pub fn line(&self) -> String {
        let io = format!("{} -> {}", self.input.display(), self.output.display());
        match self.status {
            Status::Written => {
                let (a, b) = (self.bytes_in.unwrap_or(0), self.bytes_out.unwrap_or(0));
                format!(
                    "{io}: written, {} -> {} ({:.3}x), {} weight(s) quantized in {:.2} s",
                    human_bytes(a),
                    human_bytes(b),
                    b as f64 / a.max(1) as f64,
                    self.quantized_tensors.unwrap_or(0),
                    self.seconds
                )
            }
            Status::Skipped => format!("{io}: skipped, the output exists (--skip-existing)"),
            Status::Failed => format!("{io}: FAILED: {}", self.error.as_deref().unwrap_or("")),
            Status::NotRun => format!("{io}: not run, an earlier job failed"),
        }
    }
}

fn run_one(job: &Job, force: bool) -> JobResult {
    let start = Instant::now();
    if job.skip_existing && job.output.exists() {
        return JobResult::new(job, Status::Skipped, 0.0);
    }
    let outcome = (|| -> quantize_rs::Result<(u64, u64, usize)> {
        if let Some(dir) = job.output.parent().filter(|d| job.create_dir && !d.as_os_str().is_empty()) {
            ensure_output_dir(dir)?;
        }
        quantize_rs::onnx::model::check_output(&job.output, Some(&job.input), force)?;
        let model = Model::load(&job.input)?;
        let opts = RunOptions { scratch_dir: job.output.parent().map(Path::to_path_buf), ..RunOptions::default() };
        let outcome = quantize_rs::run_with(model, &job.recipe, &job.base_dir, &opts)?;
        outcome.model.save(&job.output, &SaveOptions { force: true, ..SaveOptions::default() })?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok((size(&job.input), size(&job.output), outcome.report.quantized.len()))
    })();
    let mut r = JobResult::new(job, Status::Written, start.elapsed().as_secs_f64());
    match outcome {
        Ok((a, b, n)) => {
            r.bytes_in = Some(a);
            r.bytes_out = Some(b);
            r.quantized_tensors = Some(n);
        }
        Err(e) => {
            r.status = Status::Failed;
            r.error = Some(quantize_rs::without_backtrace(&e.to_string().replace(['\n', '\r'], " ")));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_index_order() {
        let out = parallel(10, 3, |i| i * 2);
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(parallel(0, 4, |i| i).is_empty());
    }

    #[test]
    fn outputs_must_be_distinct() {
        let job = |input: &str, output: &str| Job {
            key: input.into(),
            input: input.into(),
            output: output.into(),
            recipe: Recipe::default(),
            base_dir: ".".into(),
            skip_existing: false,
            create_dir: false,
        };
        assert!(check_distinct_outputs(&[job("a/m.onnx", "o/m.onnx"), job("b/n.onnx", "o/n.onnx")]).is_ok());
        let e = check_distinct_outputs(&[job("a/m.onnx", "o/m.onnx"), job("b/m.onnx", "o/./m.onnx")]).unwrap_err();
        assert!(e.contains("a/m.onnx and b/m.onnx would both be written to o/./m.onnx"), "{e}");
    }
}
