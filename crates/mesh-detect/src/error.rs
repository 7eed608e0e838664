//! The crate's one error type.

/// Everything that can go wrong while loading models, rules, baselines or
/// flow records. Each variant names the input and the place.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A LightGBM text model could not be parsed.
    #[error("LightGBM model, line {line}: {message}")]
    Model {
        /// 1-based line in the model file.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// The rule file is not valid.
    #[error("rule file: {message}")]
    Rules {
        /// What was wrong, naming the rule.
        message: String,
    },
    /// The benign baseline file is not valid.
    #[error("baseline: {message}")]
    Baseline {
        /// What was wrong.
        message: String,
    },
    /// A flow record (CSV row or JSON line) could not be read.
    #[error("flow record, line {line}: {message}")]
    Flow {
        /// 1-based line in the input.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// The model needs a feature the flow records do not have.
    #[error("the model needs feature `{name}`, which the flow records lack (have: {have})")]
    MissingFeature {
        /// Normalised feature name.
        name: String,
        /// A short list of the features that are there.
        have: String,
    },
    /// A setting is out of range.
    #[error("setting `{name}`: {message}")]
    Setting {
        /// The setting's name.
        name: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}
