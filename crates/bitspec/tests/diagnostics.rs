//! Snapshot tests of the compiler's diagnostics: one case per distinct user
//! mistake. Each snapshot shows exactly what the user sees.

use ben_bitspec::{compile, lock::BitTable, Source};

const PRELUDE: &str = r#"schema http.request v2 {
  ts: time
  method: string
  path: string
  status: int
  client.ip: ip
  user.email: string pii(email)
  note: string? pii(text)
}
"#;

/// Compiles the prelude plus `src` and renders every diagnostic.
fn diagnose(src: &str) -> String {
    let sources = [
        Source::new("prelude.bspec", PRELUDE),
        Source::new("case.bspec", src),
    ];
    match compile(&sources, &BitTable::default(), Default::default()) {
        Ok(_) => panic!("expected diagnostics for:\n{src}"),
        Err(f) => f.render(),
    }
}

const PACK_HEAD: &str =
    "pack p on http.request v2 {\n  redact user.email hmac\n  redact note scan\n";

fn in_pack(body: &str) -> String {
    format!("{PACK_HEAD}{body}\n}}\n")
}

macro_rules! case {
    ($name:ident, $src:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), diagnose(&$src));
        }
    };
}

case!(
    unknown_field_suggests,
    in_pack("  flag err = stauts >= 500")
);
case!(unknown_flag_suggests, in_pack("  flag a = status >= 500\n  flag b = not admn and a\n  flag admin = path starts_with \"/admin\""));
case!(
    unknown_schema_suggests,
    "pack p on http.reqest v2 { flag a = true }"
);
case!(
    unknown_schema_version,
    "pack p on http.request v9 { flag a = true }"
);
case!(unknown_contract_field, "contract c -> http.request v2 {\n  ts = in.t\n  method = in.m\n  pathh = in.p\n  status = int(in.s)\n  client.ip = in.ip\n  user.email = in.e\n}");
case!(
    contract_missing_required,
    "contract c -> http.request v2 {\n  ts = in.t\n  method = in.m\n}"
);
case!(contract_without_in, "contract c -> http.request v2 {\n  ts = in.t\n  method = verb\n  path = in.p\n  status = int(in.s)\n  client.ip = in.ip\n  user.email = in.e\n}");
case!(
    type_mismatch_string_vs_int,
    in_pack("  flag a = status == \"500\"")
);
case!(type_mismatch_int_vs_string, in_pack("  flag a = path > 5"));
case!(flag_not_bool, in_pack("  flag a = status + 1"));
case!(bad_regex, in_pack("  flag a = path matches /api(v[0-9]+/"));
case!(
    flag_cycle,
    in_pack("  flag a = b and status > 1\n  flag b = c\n  flag c = a or false")
);
case!(unknown_function, in_pack("  meta m = lowr(method)"));
case!(wrong_arity, in_pack("  meta m = upper(method, path)"));
case!(
    unknown_redact_action,
    "pack p on http.request v2 {\n  redact user.email hmca\n  redact note scan\n}"
);
case!(
    mask_without_keep_last,
    "pack p on http.request v2 {\n  redact user.email mask\n  redact note scan\n}"
);
case!(
    pii_not_redacted,
    "pack p on http.request v2 {\n  redact user.email hmac\n  flag a = true\n}"
);
case!(meta_leaks_pii, in_pack("  meta who = user.email"));
case!(unknown_route_target, in_pack("  route lucios when true"));
case!(duplicate_flag, in_pack("  flag a = true\n  flag a = false"));
case!(duplicate_schema, "schema http.request v2 { ts: time }");
case!(unknown_type, "schema s v1 {\n  a: strng\n  b: int\n}");
case!(unknown_pii_kind, "schema s v1 {\n  a: string pii(emial)\n}");
case!(reserved_field_name, "schema s v1 {\n  in: string\n}");
case!(
    unterminated_string,
    in_pack("  flag a = path == \"/admin\n  flag b = true")
);
case!(
    and_and_operator,
    in_pack("  flag a = status > 1 && status < 9")
);
case!(chained_comparison, in_pack("  flag a = 1 < status < 9"));
case!(
    misspelled_item_keyword,
    "pakc p on http.request v2 { flag a = true }"
);
case!(misspelled_statement, in_pack("  flga a = true"));
case!(
    unclosed_block,
    "pack p on http.request v2 {\n  flag a = true\n\nschema s v1 { a: int }"
);
case!(
    bad_ip_literal,
    in_pack("  flag a = client.ip in 10.0.0.300/8")
);
case!(bad_duration, "playbook b on http.request v2 {\n  when count(true) by client.ip within 60x >= 5\n  signal \"x\" severity high\n}");
case!(playbook_unknown_flag, "pack p on http.request v2 {\n  redact user.email hmac\n  redact note scan\n  flag login_failed = status == 401\n}\nplaybook b on http.request v2 {\n  when count(login_faild) by client.ip within 60s >= 5\n  signal \"auth.bruteforce\" severity high\n}");
case!(playbook_bad_severity, "playbook b on http.request v2 {\n  when count(true) by client.ip within 60s >= 5\n  signal \"x\" severity hihg\n}");
case!(
    migration_incomplete,
    "schema http.request v3 {\n  ts: time\n  region: string\n}\nmigrate http.request v2 -> v3 {\n}"
);
case!(test_unknown_flag, "pack p on http.request v2 {\n  redact user.email hmac\n  redact note scan\n  flag admin = path starts_with \"/admin\"\n}\ntest \"t\" {\n  given http.request v2 { ts: 2026-01-01T00:00:00Z, method: \"GET\", path: \"/\", status: 200, client.ip: 1.2.3.4, user.email: \"a@b.c\" }\n  expect flags == [admn]\n}");
case!(
    test_missing_required,
    "test \"t\" {\n  given http.request v2 { method: \"GET\" }\n  expect route == spine\n}"
);
case!(
    if_branches_differ,
    in_pack("  meta m = if status > 1 then \"a\" else 2")
);
case!(
    starts_with_on_int,
    in_pack("  flag a = status starts_with \"5\"")
);
case!(
    several_errors_in_one_run,
    in_pack("  flag a = stauts > 1\n  flag b = path == 3\n  meta c = lowr(path)")
);
