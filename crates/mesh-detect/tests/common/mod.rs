//! Shared test helpers: the committed test split and a detector on the
//! committed model (each parsed once per test binary).
#![allow(dead_code)]

use ben_mesh_detect::{defaults, Baseline, Config, Detector, FlowTable, LgbmModel};
use std::io::Read;
use std::sync::OnceLock;

/// The committed temporal test split (scripts/mesh/train.py writes it).
pub fn test_split() -> &'static FlowTable {
    static SPLIT: OnceLock<FlowTable> = OnceLock::new();
    SPLIT.get_or_init(|| {
        let gz: &[u8] = include_bytes!("../data/test-flows.csv.gz");
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .expect("test split decompresses");
        FlowTable::parse(&text).expect("test split parses")
    })
}

/// The committed model.
pub fn model() -> &'static LgbmModel {
    static MODEL: OnceLock<LgbmModel> = OnceLock::new();
    MODEL.get_or_init(|| LgbmModel::parse(defaults::MODEL).expect("model"))
}

/// A detector with the committed model, baseline and rules.
pub fn detector(cfg: Config, table: &FlowTable) -> Detector {
    let baseline = Baseline::parse(defaults::BASELINE).expect("baseline");
    Detector::new(
        cfg,
        model().clone(),
        defaults::MODEL_VERSION,
        &baseline,
        defaults::RULES,
        &table.feature_names,
    )
    .expect("detector")
}
