//! Property tests: the compiled evaluator agrees with the reference
//! interpreter on random expressions over random records, and the compiler
//! never panics on arbitrary input.

use ben_bitspec::compile::CompiledPack;
use ben_bitspec::{compile, interp, lock::BitTable, Source, Value};
use proptest::prelude::*;

const SCHEMA: &str = "schema r v1 {
  i: int
  i2: int?
  f: float
  s: string
  s2: string?
  b: bool
  ob: bool?
  ip: ip
  t: time
  d: duration
}
";

fn leaf_int() -> BoxedStrategy<String> {
    prop_oneof![
        Just("i".to_string()),
        Just("i2".to_string()),
        prop_oneof![-3i64..8, 498i64..503].prop_map(|n| n.to_string()),
        Just("9223372036854775807".to_string()),
        Just("len(s)".to_string()),
        Just("int(s)".to_string()),
        Just("int(f)".to_string()),
    ]
    .boxed()
}

fn leaf_str() -> BoxedStrategy<String> {
    prop_oneof![
        Just("s".to_string()),
        Just("s2".to_string()),
        "[abcAé/]{0,3}".prop_map(|s| format!("{s:?}")),
    ]
    .boxed()
}

fn leaf_float() -> BoxedStrategy<String> {
    prop_oneof![
        Just("f".to_string()),
        (-100i32..100).prop_map(|n| format!("{}.5", n)),
        Just("float(s)".to_string())
    ]
    .boxed()
}

fn int_expr() -> BoxedStrategy<String> {
    leaf_int()
        .prop_recursive(3, 12, 2, |inner| {
            let s = str_expr_leaf();
            prop_oneof![
                (
                    inner.clone(),
                    prop::sample::select(vec!["+", "-", "*", "/", "%"]),
                    inner.clone()
                )
                    .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
                inner.clone().prop_map(|a| format!("-({a})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ?? {b})")),
                (bool_leaf(), inner.clone(), inner.clone())
                    .prop_map(|(c, a, b)| format!("(if {c} then {a} else {b})")),
                s.prop_map(|x| format!("len({x})")),
            ]
        })
        .boxed()
}

fn str_expr_leaf() -> BoxedStrategy<String> {
    leaf_str()
        .prop_recursive(2, 6, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| format!("upper({a})")),
                inner.clone().prop_map(|a| format!("lower({a})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ?? {b})")),
            ]
        })
        .boxed()
}

fn float_expr() -> BoxedStrategy<String> {
    leaf_float()
        .prop_recursive(2, 6, 2, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop::sample::select(vec!["+", "-", "*", "/"]),
                    inner.clone()
                )
                    .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
                (inner.clone(), leaf_int()).prop_map(|(a, b)| format!("({a} + {b})")),
            ]
        })
        .boxed()
}

fn bool_leaf() -> BoxedStrategy<String> {
    let cmp = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    prop_oneof![
        // field OP constant: the shapes the compiler specialises.
        4 => (prop::sample::select(vec!["i", "i2"]), cmp.clone(), prop_oneof![-3i64..8, 498i64..503]).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        4 => (prop::sample::select(vec!["s", "s2"]), prop::sample::select(vec!["starts_with", "ends_with", "contains", "==", "!=", "<", ">="]), "[abcAé/]{0,2}").prop_map(|(a, o, b)| format!("{a} {o} {b:?}")),
        1 => Just("b".to_string()),
        1 => Just("ob".to_string()),
        1 => Just("true".to_string()),
        1 => (leaf_int(), cmp.clone(), leaf_int()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        1 => (leaf_str(), cmp, leaf_str()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        1 => (leaf_str(), prop::sample::select(vec!["starts_with", "ends_with", "contains"]), leaf_str()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        1 => prop::sample::select(vec!["10.0.0.0/8", "0.0.0.0/0", "192.168.1.0/24", "\"2001:db8::/32\""]).prop_map(|c| format!("ip in {c}")),
        1 => Just("s matches /^[a-c]+$/".to_string()),
        1 => Just("s2 == null".to_string()),
        1 => Just("i2 != null".to_string()),
        1 => Just("ob == true".to_string()),
        1 => Just("ob == null".to_string()),
        1 => Just("t > 2026-01-01T00:00:00Z".to_string()),
        1 => Just("d >= 60s".to_string()),
        1 => Just("i in [1, 2, 500]".to_string()),
        1 => Just("s in [\"a\", \"b\"]".to_string()),
        1 => Just("ip in [10.0.0.0/8, 1.2.3.4/32]".to_string()),
    ]
    .boxed()
}

fn bool_expr() -> BoxedStrategy<String> {
    let cmp = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    bool_leaf()
        .prop_recursive(3, 16, 2, move |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| format!("not ({a})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(c, a, b)| format!("if {c} then {a} else {b}")),
                (int_expr(), cmp.clone(), int_expr()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
                (float_expr(), cmp.clone(), float_expr())
                    .prop_map(|(a, o, b)| format!("{a} {o} {b}")),
                (str_expr_leaf(), cmp.clone(), str_expr_leaf())
                    .prop_map(|(a, o, b)| format!("{a} {o} {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) == ({b})")),
            ]
        })
        .boxed()
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
    f: fn(T) -> Value,
) -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 4 => s.prop_map(f)].boxed()
}

fn record() -> impl Strategy<Value = Vec<Value>> {
    let int = prop_oneof![4 => -3i64..8, 2 => 498i64..503, 1 => Just(i64::MAX), 1 => Just(i64::MIN), 1 => any::<i64>()];
    let float = prop_oneof![
        -1e3f64..1e3,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(-0.0)
    ];
    let s = "[abcAé/ 7]{0,4}";
    (
        int.clone(),
        opt(int, Value::Int),
        float,
        s,
        opt(s, Value::Str),
        any::<bool>(),
        opt(any::<bool>(), Value::Bool),
        prop_oneof![
            any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
            Just("10.1.2.3".parse().unwrap()),
            Just("2001:db8::1".parse().unwrap()),
            Just("::ffff:10.0.0.1".parse().unwrap())
        ],
        (1_700_000_000i64..1_800_000_000).prop_map(|s| s * 1_000_000_000),
        (0i64..200).prop_map(|s| s * 1_000_000_000),
    )
        .prop_map(|(i, i2, f, s, s2, b, ob, ip, t, d)| {
            vec![
                Value::Int(i),
                i2,
                Value::Float(f),
                Value::Str(s),
                s2,
                Value::Bool(b),
                ob,
                Value::Ip(ip),
                Value::Time(t),
                Value::Duration(d),
            ]
        })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (a, b) => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_interpreter(
        flags in prop::collection::vec(bool_expr(), 1..4),
        mi in int_expr(),
        ms in str_expr_leaf(),
        mf in float_expr(),
        recs in prop::collection::vec(record(), 1..6),
    ) {
        let mut src = String::from(SCHEMA);
        src.push_str("pack p on r v1 {\n");
        for (n, f) in flags.iter().enumerate() {
            src.push_str(&format!("  flag f{n} = {f}\n"));
        }
        // A flag over earlier flags, metas of each type, and a route.
        src.push_str(&format!("  flag combo = {}\n", (0..flags.len()).map(|n| format!("f{n}")).collect::<Vec<_>>().join(" or ")));
        src.push_str(&format!("  meta mi = {mi}\n  meta ms = {ms}\n  meta mf = {mf}\n"));
        src.push_str("  route lucius when combo and not b\n}\n");
        let out = compile(&[Source::new("gen.bspec", src.clone())], &BitTable::default(), Default::default());
        let out = match out {
            Ok(o) => o,
            Err(f) => return Err(TestCaseError::fail(format!("generated source did not compile:\n{src}\n{}", f.render()))),
        };
        let pack = &out.program.packs[0];
        let compiled = CompiledPack::new(pack);
        let mut scratch = compiled.scratch();
        for rec in &recs {
            let want = interp::eval_pack(pack, rec).map_err(|e| TestCaseError::fail(format!("interpreter error {e} on {src}")))?;
            let route = compiled.eval(rec, &mut scratch);
            prop_assert_eq!(&scratch.bits, &want.bits(pack), "flags differ\n{}\nrecord {:?}", src, rec);
            prop_assert_eq!(route, want.route);
            for (i, (a, b)) in scratch.metas.iter().zip(want.metas.iter()).enumerate() {
                prop_assert!(same(a, b), "meta {} differs: compiled {:?}, interpreter {:?}\n{}\nrecord {:?}", i, a, b, src, rec);
            }
        }
    }

    #[test]
    fn compiler_never_panics_on_arbitrary_text(src in "\\PC{0,300}") {
        let _ = compile(&[Source::new("x.bspec", src)], &BitTable::default(), Default::default());
    }

    #[test]
    fn compiler_never_panics_on_token_soup(words in prop::collection::vec(prop::sample::select(vec![
        "schema", "contract", "pack", "playbook", "migrate", "test", "flag", "meta", "redact", "route",
        "when", "signal", "severity", "given", "expect", "on", "by", "within", "in", "in.x", "and", "or",
        "not", "if", "then", "else", "matches", "/a/", "{", "}", "(", ")", "[", "]", ",", ":", "=", "==",
        "->", "??", "?", "+", "-", "*", "/", "%", "<", ">=", "v1", "v2", "r", "a.b", "x", "1", "1.5",
        "60s", "\"s\"", "10.0.0.0/8", "1.2.3.4", "2026-01-01T00:00:00Z", "string", "int", "pii(email)",
        "hmac", "mask(keep_last: 4)", "count(x)", "lucius", "null", "true", "#c\n", "\n",
    ]), 0..80)) {
        let src = words.join(" ");
        let _ = compile(&[Source::new("x.bspec", format!("{SCHEMA}{src}"))], &BitTable::default(), Default::default());
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let src = format!(
        "{SCHEMA}pack p on r v1 {{ flag a = {}true{} }}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let err = compile(
        &[Source::new("deep.bspec", src)],
        &BitTable::default(),
        Default::default(),
    )
    .unwrap_err();
    assert!(
        err.render().contains("nested more than"),
        "{}",
        err.render()
    );
}
