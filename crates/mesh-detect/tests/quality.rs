//! Detection quality on the committed temporal test split: the last capture
//! round of scripts/mesh/gen-data.sh, never seen in training. Targets
//! (DESIGN §7): macro-F1 ≥ 0.95 and < 0.1 % false alarms on benign flows.

mod common;

use ben_mesh_detect::quality::Confusion;
use ben_mesh_detect::Config;

#[test]
fn temporal_split_meets_the_quality_targets() {
    let table = common::test_split();
    let mut det = common::detector(Config::default(), table);
    let classes = det.classes().to_vec();
    let report = det.run(table);
    let mut conf = Confusion::new(&classes);
    let mut ml_conf = Confusion::new(&classes);
    let mut rules_conf = Confusion::new(&classes);
    let mut math_conf = Confusion::new(&classes);
    for (flow, v) in table.flows.iter().zip(&report.verdicts) {
        let label = flow.label.as_deref().unwrap_or("").to_ascii_lowercase();
        let truth = classes
            .iter()
            .position(|c| *c == label)
            .unwrap_or_else(|| panic!("flow {} has label {label:?}", flow.id));
        conf.add(truth, v.class);
        ml_conf.add(truth, v.ml_class);
        rules_conf.add(truth, v.rules_class);
        math_conf.add(truth, v.math_class);
    }
    println!("test split: {} flows", table.flows.len());
    for s in conf.per_class() {
        println!(
            "  {:>13}: n={:>6} precision {:.4} recall {:.4} f1 {:.4}",
            s.class, s.support, s.precision, s.recall, s.f1
        );
    }
    let (f1, far) = (conf.macro_f1(), conf.false_alarm_rate());
    println!(
        "ensemble: macro-F1 {f1:.4}, false-alarm rate {:.4} %",
        far * 100.0
    );
    println!(
        "ML engine alone (arg-max): macro-F1 {:.4}, false-alarm rate {:.4} %",
        ml_conf.macro_f1(),
        ml_conf.false_alarm_rate() * 100.0
    );
    for (name, c) in [("rules", &rules_conf), ("math", &math_conf)] {
        let recalls: Vec<String> = c
            .per_class()
            .iter()
            .map(|s| format!("{} {:.3}", s.class, s.recall))
            .collect();
        println!(
            "{name} engine alone: recall [{}], false-alarm rate {:.4} %",
            recalls.join(", "),
            c.false_alarm_rate() * 100.0
        );
    }
    let s = &report.summary;
    println!(
        "anomalies: {} ({} published, {} rate limited) from {} flagged flows",
        s.anomalies, s.published, s.rate_limited, s.flagged_flows
    );
    println!("confusion [truth][predicted]: {:?}", conf.matrix());
    assert!(
        conf.per_class().iter().all(|c| c.support > 0),
        "every class must be in the test split"
    );
    assert!(f1 >= 0.95, "macro-F1 {f1:.4} < 0.95");
    assert!(far < 0.001, "false-alarm rate {:.4} % ≥ 0.1 %", far * 100.0);
    // Aggregation: anomalies are per (source, window, class), far fewer than flows.
    assert!(
        s.anomalies * 20 < s.flagged_flows,
        "{} anomalies for {} flagged flows",
        s.anomalies,
        s.flagged_flows
    );
}
