"""Unit tests of the harness's own parsing and config code (no server, no network):

    python3 -m unittest discover -s tests/bench/hardening -p 'test_*.py'
"""

import sys
import tomllib
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402
import run  # noqa: E402


class ConfigTests(unittest.TestCase):
    def test_extra_merges_into_the_figures_sections(self):
        base = {"server": {"drain_timeout_s": 5}, "sip": {"transport": "tcp"}}
        extra = h.parse_extra("[server]\\nmax_calls = 500\n[webhooks]\nmax_response_bytes = 1048576")
        merged = h.merge(base, extra)
        self.assertEqual(merged["server"], {"drain_timeout_s": 5, "max_calls": 500})
        self.assertEqual(merged["webhooks"], {"max_response_bytes": 1048576})
        # What is written back is TOML that reads as the same thing.
        self.assertEqual(tomllib.loads(h.to_toml(merged)), merged)

    def test_extra_overrides_and_nests(self):
        merged = h.merge({"webhooks": {"timeout_ms": 1000}}, h.parse_extra("webhooks.timeout_ms = 50\n[a.b]\nc = 'x'"))
        self.assertEqual(merged["webhooks"]["timeout_ms"], 50)
        self.assertEqual(tomllib.loads(h.to_toml(merged))["a"]["b"]["c"], "x")

    def test_set_parses_by_the_defaults_type(self):
        params = run.parse_set(["calls=7", "checkpoints_s=[1,2]", "dead=refused"],
                               {"calls": 1, "checkpoints_s": [10], "dead": "never"})
        self.assertEqual(params, {"calls": 7, "checkpoints_s": [1, 2], "dead": "refused"})
        with self.assertRaises(SystemExit):
            run.parse_set(["nope=1"], {"calls": 1})


class ParserTests(unittest.TestCase):
    def test_metrics_totals_and_labels(self):
        page = h.Metrics(
            "# HELP x\nverbhost_calls_active 3\n"
            'verbhost_plugin_traps_total{verb="sip:refer",kind="cpu budget exceeded"} 2\n'
            'verbhost_plugin_traps_total{verb="x",kind="host call limit"} 1\n# EOF\n'
        )
        self.assertEqual(page.total("verbhost_calls_active"), 3)
        self.assertEqual(page.total("verbhost_plugin_traps"), 3)
        self.assertEqual(page.by_label("verbhost_plugin_traps", "kind"),
                         {"cpu budget exceeded": 2, "host call limit": 1})
        self.assertEqual(page.lines, 5)

    def test_sip_parser_expands_compact_names_and_never_raises(self):
        msg = h.parse_sip(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP x\r\ni: abc\r\nCSeq: 4 NOTIFY\r\n\r\n")
        self.assertEqual((msg.status, msg.method, msg.header("call-id")), (200, "NOTIFY", "abc"))
        self.assertIsNone(h.parse_sip(b""))
        h.parse_sip(b"\xff\xfe garbage : \n\n")

    def test_overflow_head_is_padded_to_wrap_to_zero(self):
        head = run._overflow_head(("127.0.0.1", 5060), ("127.0.0.1", 40000), 18446744073709551000)
        self.assertEqual(len(head) + 18446744073709551000, 1 << 64)
        self.assertTrue(head.endswith(b"Content-Length: 18446744073709551000\r\n\r\n"))

    def test_sipp_error_reasons_are_counted_without_call_ids(self):
        log = (
            "2026-12-01\t21:56:03.757335\t1796162163.757335: Aborting call on unexpected message for "
            "Call-Id '2-1@127.0.0.1': while expecting 'BYE' (index 7), received 'REFER sip:a@b SIP/2.0\n"
            "Via: x\n'2026-12-01\t21:56:03.857125\t1796162163.857125: Aborting call on unexpected message"
            " for Call-Id '3-1@127.0.0.1': while expecting 'BYE' (index 7), received 'REFER sip:a@c SIP/2.0\n"
        )
        self.assertEqual(
            h.error_reasons(log),
            {"Aborting call on unexpected message for Call-Id <call>: while expecting 'BYE' (index 7),"
             " received REFER": 2},
        )

    def test_verdict_names_the_unmet_goals(self):
        self.assertEqual(run.verdict((True, "a"), (False, "b")), {"pass": False, "failed": ["b"]})
        self.assertEqual(run.verdict((True, "a")), {"pass": True, "failed": []})


if __name__ == "__main__":
    unittest.main()
