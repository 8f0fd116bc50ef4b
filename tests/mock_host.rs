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

#[tokio::test]
async fn a_verb_the_plugin_does_not_declare_is_refused_as_serve_refuses_it() {
    // Without the check, sip-refer would run this verb and refuse it itself ("this plugin
    // implements sip:refer, not say"); serve never hands it a verb it did not declare.
    let report = run_one(json!({
        "name": "undeclared verb",
        "verb": { "verb": "say", "text": "hello" },
        "expect": {
            "refer": null,
            "error": { "kind": "no-plugin", "message": "no plugin implements the verb \"say\" (loaded: sip:refer)" }
        }
    }))
    .await;
    assert!(report.passed(), "{report}");
}

#[tokio::test]
async fn the_mock_host_checks_a_verb_before_it_runs_it_as_serve_does() {
    let host = MockHost::new().expect("mock host starts");
    let plugin = host
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("the misbehave plugin loads");
    assert!(plugin.can_check());
    // This mode logs while reading the verb: fine in a run, a trap in a check (which has no
    // call). A mock host that ran the verb unchecked would see it complete.
    let scenario = Scenario::from_value(json!({
        "name": "host call while checking",
        "verb": { "verb": "misbehave", "mode": "host-call-in-parse" },
        "expect": {
            "error": { "kind": "trap", "message_contains": "describe() and check() may not call the host" }
        }
    }))
    .expect("valid scenario");
    let report = host.run(&plugin, &scenario).await;
    assert!(report.passed(), "{report}");
    // Run directly, the same verb completes: the refusal above came from the check.
    let run = plugin
        .run(
            verbhost_mock::MockCall::new(&scenario),
            &scenario.verb_text(),
            &scenario.call.to_call_info(),
        )
        .await;
    assert_eq!(run.outcome.expect("the run completes").event, "DONE");
}

#[tokio::test]
async fn check_reads_the_verb_without_running_it_and_old_plugins_have_none() {
    let (_host, plugin) = sip_refer().await;
    assert!(plugin.can_check());
    plugin
        .check(r#"{"verb":"sip:refer","referTo":"+4930123","actionHook":"/a"}"#)
        .await
        .expect("a good verb passes");
    let err = plugin
        .check(r#"{"verb":"sip:refer","referto":"+4930123"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid verb: sip:refer: unknown property referto"
    );
    let host = MockHost::new().expect("mock host starts");
    let old = host
        .load_file(verbhost_guests::CONTRACT_0_1_0.as_ref())
        .await
        .expect("a 0.1.0 plugin still loads");
    assert!(!old.can_check());
    // Nothing to ask it: only the size bound applies.
    old.check(r#"{"verb":"old:greet","fail":true}"#)
        .await
        .expect("no check export, nothing refused");
    let too_big = format!(r#"{{"verb":"old:greet","x":"{}"}}"#, "x".repeat(2 << 20));
    assert!(matches!(
        old.check(&too_big).await,
        Err(verbhost_runtime::RunError::VerbTooLarge { .. })
    ));
}
