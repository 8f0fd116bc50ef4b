//! The shipped scenarios, run through the mock host's Rust API (the way a plugin author's own
//! `cargo test` runs them), and the mock host's own behaviour: it must fail loudly when a
//! plugin does not do what a scenario expects.

#[path = "support/scenarios.rs"]
mod scenarios;

use serde_json::json;
use verbhost_mock::{MockHost, Report, Scenario};

async fn sip_refer() -> (MockHost, verbhost_runtime::Plugin<verbhost_mock::MockCall>) {
    let host = MockHost::new().expect("mock host starts");
    let plugin = host
        .load(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("the sip:refer plugin loads");
    (host, plugin)
}

async fn run_one(scenario: serde_json::Value) -> Report {
    let (host, plugin) = sip_refer().await;
    let scenario = Scenario::from_value(scenario).expect("valid scenario");
    host.run(&plugin, &scenario).await
}

#[tokio::test]
async fn every_shipped_sip_refer_scenario_passes() {
    let (host, plugin) = sip_refer().await;
    assert_eq!(plugin.info().verbs, ["sip:refer"]);
    scenarios::assert_sip_refer_suite_passes(&host, &plugin).await;
}

#[tokio::test]
async fn a_wrong_expectation_fails_with_a_readable_diff() {
    let report = run_one(json!({
        "name": "wrong target expected",
        "verb": { "verb": "sip:refer", "referTo": "sip:carol@pbx.example" },
        "refer_response": { "status": 603 },
        "expect": {
            "refer": { "refer_to": "<sip:dave@pbx.example>" },
            "completion": { "event": "TRANSFER_REFER_SUCCESS" }
        }
    }))
    .await;
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.starts_with("FAIL wrong target expected"), "{text}");
    assert!(
        text.contains(r#"-   "refer_to": "<sip:dave@pbx.example>""#),
        "{text}"
    );
    assert!(
        text.contains(r#"+   "refer_to": "<sip:carol@pbx.example>""#),
        "{text}"
    );
    assert!(
        text.contains(r#"-   "event": "TRANSFER_REFER_SUCCESS""#),
        "{text}"
    );
    assert!(
        text.contains("send-refer  Refer-To: <sip:carol@pbx.example>"),
        "transcript: {text}"
    );
    assert_eq!(report.failures.len(), 2, "{text}");
}

#[tokio::test]
async fn a_refer_the_scenario_does_not_script_is_a_failure() {
    let report = run_one(json!({
        "name": "no REFER allowed",
        "verb": { "verb": "sip:refer", "referTo": "sip:carol@pbx.example" },
        "expect": {}
    }))
    .await;
    assert!(!report.passed());
    assert!(
        report.failures.iter().any(|f| f.what == "host calls"
            && f.detail == "the plugin sent a REFER, but the scenario scripts no refer_response"),
        "{report}"
    );
}

#[tokio::test]
async fn an_expected_error_that_does_not_happen_is_a_failure() {
    let report = run_one(json!({
        "name": "expects an error",
        "verb": { "verb": "sip:refer", "referTo": "sip:carol@pbx.example" },
        "refer_response": { "status": 603 },
        "expect": { "error": { "kind": "invalid-verb" } }
    }))
    .await;
    assert!(!report.passed());
    assert!(
        report
            .to_string()
            .contains("expected a invalid-verb error, but the verb completed"),
        "{report}"
    );
}

#[tokio::test]
async fn a_one_mib_verb_whose_bulk_is_one_header_is_refused_naming_the_header() {
    let report = run_one(json!({
        "name": "1 MiB header",
        "verb": {
            "verb": "sip:refer",
            "referTo": "sip:carol@pbx.example",
            "headers": { "X-Big": "x".repeat((1 << 20) - 100) }
        },
        "expect": {
            "refer": null,
            "error": { "kind": "invalid-verb", "message": "sip:refer: headers: header X-Big: value is longer than 4096 bytes" }
        }
    }))
    .await;
    assert!(report.passed(), "{report}");
}

#[test]
fn malformed_scenarios_are_refused_with_the_cause() {
    let both = Scenario::from_value(json!({
        "name": "both", "verb": {}, "verb_text": "{}", "expect": {}
    }));
    assert_eq!(
        both.unwrap_err().to_string(),
        "invalid scenario: both: give exactly one of `verb` and `verb_text`"
    );
    let typo = Scenario::from_json(r#"{"name": "typo", "verb": {}, "expcet": {}}"#);
    assert!(
        typo.unwrap_err()
            .to_string()
            .contains("unknown field `expcet`")
    );
    let event = Scenario::from_value(json!({
        "name": "event", "verb": {}, "notifies": [{ "at_ms": 1 }], "expect": {}
    }));
    assert!(
        event
            .unwrap_err()
            .to_string()
            .contains("exactly one of `notify` and `bye`")
    );
}

#[tokio::test]
async fn unreadable_scenario_files_are_failed_reports_not_crashes() {
    let (host, plugin) = sip_refer().await;
    let dir = std::env::temp_dir().join(format!("verbhost-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{ not json").expect("write");
    let missing = dir.join("missing.json");
    let reports = host.run_files(&plugin, &[broken, missing]).await;
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| !r.passed()));
    assert!(
        reports[0]
            .to_string()
            .contains("invalid scenario: key must be a string")
    );
    assert!(reports[1].to_string().contains("cannot read"));
    std::fs::remove_dir_all(&dir).ok();
}
