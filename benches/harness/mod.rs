//! The benchmark method of performance.md, shared by every bench binary:
//! rows run interleaved round-robin, each calibrated to a ~20 ms batch,
//! 15 rounds; tables print min and median ns/op and the median of the
//! per-round ratios against a base row.
#![allow(dead_code)]

use astrid::ffi::call::{astrid_capsule_call, astrid_result_free};
use astrid::ffi::capsule::astrid_capsule_t;
use astrid::ffi::ASTRID_OK;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ROUNDS: usize = 15;
pub const BATCH: Duration = Duration::from_millis(20);

pub struct Row<'a> {
    name: String,
    run: Box<dyn FnMut() + 'a>,
    iters: u64,
    samples: Vec<f64>,
}

impl<'a> Row<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut() + 'a) -> Self {
        Row {
            name: name.into(),
            run: Box::new(run),
            iters: 1,
            samples: Vec::new(),
        }
    }

    fn calibrate(&mut self) {
        (self.run)(); // warm up
        loop {
            let started = Instant::now();
            for _ in 0..self.iters {
                (self.run)();
            }
            if started.elapsed() >= BATCH / 2 || self.iters >= 1 << 24 {
                let per = started.elapsed().as_secs_f64() / self.iters as f64;
                self.iters = ((BATCH.as_secs_f64() / per) as u64).max(1);
                return;
            }
            self.iters *= 2;
        }
    }

    fn round(&mut self) {
        let started = Instant::now();
        for _ in 0..self.iters {
            (self.run)();
        }
        self.samples
            .push(started.elapsed().as_nanos() as f64 / self.iters as f64);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs the rows round-robin and prints the table; ratios are against row `base`.
pub fn table(title: &str, rows: &mut [Row<'_>], base: usize) -> Vec<f64> {
    for row in rows.iter_mut() {
        row.calibrate();
    }
    for _ in 0..ROUNDS {
        for row in rows.iter_mut() {
            row.round();
        }
    }
    println!("\n{title}");
    println!(
        "{:<48} {:>12} {:>12} {:>10}",
        "row",
        "min ns/op",
        "median ns/op",
        format!("× row {}", base + 1)
    );
    let base_samples = rows[base].samples.clone();
    let mut ratios = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let ratio = median(
            row.samples
                .iter()
                .zip(&base_samples)
                .map(|(a, b)| a / b)
                .collect(),
        );
        let min = row.samples.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "{:<48} {:>12.0} {:>12.0} {:>10.2}",
            format!("{}. {}", i + 1, row.name),
            min,
            median(row.samples.clone()),
            ratio
        );
        ratios.push(ratio);
    }
    ratios
}

pub fn capsule_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("build/capsules")
        .join(name)
}

/// One `astrid_capsule_call`, exactly as a C program makes it; must succeed.
pub fn c_call(capsule: *mut astrid_capsule_t, action: &str, payload: &[u8]) {
    let mut result = std::ptr::null_mut();
    let status = astrid_capsule_call(
        capsule,
        action.as_ptr().cast(),
        action.len(),
        payload.as_ptr(),
        payload.len(),
        &mut result,
        std::ptr::null_mut(),
    );
    assert_eq!(status, ASTRID_OK);
    astrid_result_free(result);
}
