//! Hand-built summaries for the tests of what consumes them (history, exports, gate, HTML).

use melt_bench::backend::ModelInfo;
use melt_bench::host::HostInfo;
use melt_bench::model::ModelFormat;
use melt_bench::model::ModelSpec;
use melt_bench::params::Params;
use melt_bench::stats::OutlierCounts;
use melt_bench::store::{CaseSummary, Metric, Summary};
use melt_bench::workload::tg;

/// A model as a registry would describe it (the file need not exist).
pub fn model_spec() -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        path: "/m.gguf".into(),
        format: ModelFormat::Gguf,
        sha256: "ab".repeat(32),
        size_bytes: 1,
    }
}

pub fn summary(run_id: &str, case_ids: &[&str], tok_s: f64) -> Summary {
    let cases = case_ids
        .iter()
        .map(|id| CaseSummary {
            id: id.to_string(),
            group: "m".into(),
            function: "tg128".into(),
            value: "llama.cpp t=2".into(),
            backend: "llama.cpp".into(),
            backend_version: "test".into(),
            model: model_spec(),
            model_info: ModelInfo::default(),
            params: Params::default(),
            workload: tg(128),
            samples: 3,
            stop_reason: melt_bench::sampling::StopReason::SampleSize,
            metrics: [(
                "tokens_per_second".to_string(),
                Metric {
                    unit: "tok/s".into(),
                    estimate: tok_s,
                    lower: Some(tok_s - 1.0),
                    upper: Some(tok_s + 1.0),
                    n: 3,
                    note: None,
                },
            )]
            .into(),
            outliers: OutlierCounts::default(),
            comparison: None,
            criterion_dir: "/c".into(),
            sustained: None,
        })
        .collect();
    Summary {
        schema_version: 1,
        run_id: run_id.into(),
        host: HostInfo::default(),
        device: None,
        device_props: Default::default(),
        cases,
        errors: vec![],
        probes: None,
        tasks: vec![],
    }
}
