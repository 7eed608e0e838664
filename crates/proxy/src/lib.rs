//! # Proxy
//!
//! Routes each record from the sidecars (`ben.data.proxy`, queue group
//! `proxies`) by the declared intent: to Lucius (`ben.data.lucius`) when a
//! pack's `route lucius when …` clause holds, otherwise to a spine
//! (`ben.data.spine`). It evaluates only what the route clauses need: each
//! pack is pruned to its routes and the flags and metas they depend on
//! ([`route_only`]), so the proxy never computes the rest of a policy.

use ben_bitspec::compile::CompiledPack;
use ben_bitspec::interp;
use ben_bitspec::ir::{Def, Pack, Program, RouteTarget, TExpr, TKind};
use ben_component::{subjects, Deps, IntentAgent, Load, RecordView, Role};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn refs(e: &TExpr, out: &mut BTreeSet<Def>) {
    match &e.kind {
        TKind::Flag(i) => {
            out.insert(Def::Flag(*i));
        }
        TKind::Meta(i) => {
            out.insert(Def::Meta(*i));
        }
        _ => {}
    }
    for c in e.children() {
        refs(c, out);
    }
}

/// Marks the record fields `e` reads.
fn fields(e: &TExpr, keep: &mut [bool]) {
    if let TKind::Field(s) = &e.kind {
        if let Some(k) = keep.get_mut(*s) {
            *k = true;
        }
    }
    for c in e.children() {
        fields(c, keep);
    }
}

/// The pack reduced to its route clauses and their dependencies. Flags
/// keep their indexes; unneeded ones become constant false and are skipped.
pub fn route_only(p: &Pack) -> Pack {
    let mut need = BTreeSet::new();
    for r in &p.routes {
        refs(&r.when, &mut need);
    }
    // Close over dependencies, walking the evaluation order backwards.
    for d in p.order.iter().rev() {
        if need.contains(d) {
            let e = match d {
                Def::Flag(i) => &p.flags[*i].expr,
                Def::Meta(i) => &p.metas[*i].expr,
            };
            refs(e, &mut need);
        }
    }
    let mut q = p.clone();
    q.order.retain(|d| need.contains(d));
    q.redactions.clear();
    q
}

/// The routing table: per schema index, the pruned packs.
pub struct Routes {
    pub program: Program,
    /// Per schema index: the fields some route (or what it depends on)
    /// reads; only those are decoded.
    keep: Vec<Vec<bool>>,
    /// Per schema index: the migrations a record of it goes through
    /// before packs evaluate it ([`ben_intent::eval::migration_path`]),
    /// when that ends on a schema with routes. Such a record is decoded
    /// whole, migrated and routed by the current version's routes, as
    /// the spine and `benctl eval` evaluate it.
    migrate: Vec<Option<(usize, Vec<usize>)>>,
    packs: Vec<(
        usize,
        CompiledPack,
        std::sync::Mutex<ben_bitspec::compile::Scratch>,
    )>,
}

impl Routes {
    pub fn new(program: Program) -> Self {
        let mut keep: Vec<Vec<bool>> = program
            .schemas
            .iter()
            .map(|s| vec![false; s.fields.len()])
            .collect();
        let packs: Vec<(usize, CompiledPack, std::sync::Mutex<_>)> = program
            .packs
            .iter()
            .filter(|p| !p.routes.is_empty())
            .map(|p| {
                let pruned = route_only(p);
                if let Some(k) = keep.get_mut(p.schema) {
                    for d in &pruned.order {
                        match d {
                            Def::Flag(i) => fields(&pruned.flags[*i].expr, k),
                            Def::Meta(i) => fields(&pruned.metas[*i].expr, k),
                        }
                    }
                    for r in &pruned.routes {
                        fields(&r.when, k);
                    }
                }
                let c = CompiledPack::new(&pruned);
                let scratch = std::sync::Mutex::new(c.scratch());
                (p.schema, c, scratch)
            })
            .collect();
        let migrate = (0..program.schemas.len())
            .map(|s| {
                let path = ben_intent::eval::migration_path(&program, s);
                let to = path.last().map(|m| program.migrations[*m].to)?;
                packs.iter().any(|(p, _, _)| *p == to).then_some((to, path))
            })
            .collect();
        Routes {
            program,
            keep,
            migrate,
            packs,
        }
    }

    /// Where a record goes; `Err` is the dead-letter reason.
    pub fn route(&self, rec: &RecordView) -> Result<RouteTarget, String> {
        let schema = self
            .program
            .schema(rec.schema(), Some(rec.schema_version))
            .ok_or_else(|| format!("unknown schema {} v{}", rec.schema(), rec.schema_version))?;
        if let Some((to, path)) = &self.migrate[schema] {
            let mut values =
                interp::decode_record(&self.program.schemas[schema], rec.values(), rec.body())
                    .map_err(|e| e.to_string())?;
            for m in path {
                values = interp::migrate(&self.program, &self.program.migrations[*m], &values)
                    .map_err(|e| e.to_string())?;
            }
            return Ok(self.eval(*to, &values));
        }
        if !self.packs.iter().any(|(s, _, _)| *s == schema) {
            return Ok(RouteTarget::Spine);
        }
        let values = interp::decode_record_some(
            &self.program.schemas[schema],
            rec.values(),
            rec.body(),
            &self.keep[schema],
        )
        .map_err(|e| e.to_string())?;
        Ok(self.eval(schema, &values))
    }

    /// The route of a record of `schema` (values in its slot order).
    fn eval(&self, schema: usize, values: &[ben_bitspec::Value]) -> RouteTarget {
        let mut target = RouteTarget::Spine;
        for (_, c, scratch) in self.packs.iter().filter(|(s, _, _)| *s == schema) {
            // One proxy task per routing table: the lock is uncontended and
            // the scratch buffers are reused instead of allocated per record.
            let mut scratch = scratch.lock().unwrap_or_else(|p| p.into_inner());
            if c.eval(values, &mut scratch) == RouteTarget::Lucius {
                target = RouteTarget::Lucius;
            }
        }
        target
    }
}

pub struct ProxyRole;

impl Role for ProxyRole {
    const NAME: &'static str = "proxy";
    type Compiled = Routes;
    fn compile(&self, arts: &BTreeMap<String, Vec<u8>>, _version: &str) -> Result<Routes, String> {
        let program =
            ben_bitspec::canon::program_from_artifacts(arts).map_err(|e| e.to_string())?;
        Ok(Routes::new(program))
    }
}

/// Runs a proxy until the bus closes.
pub async fn run(deps: Deps, load: Arc<Load>) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), ProxyRole);
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let _heartbeats = ben_component::start_heartbeats(&deps, "proxy", active.clone(), load.clone());
    ben_component::consume(
        &deps,
        subjects::PROXY,
        "proxies",
        &active,
        &load,
        // Records are routed in place and sent on as they arrived.
        |loaded, rec: RecordView, out| {
            let subject = match loaded.compiled.route(&rec)? {
                RouteTarget::Lucius => subjects::LUCIUS,
                RouteTarget::Spine => subjects::SPINE,
            };
            out.raw(subject, &rec);
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_bitspec::{compile, lock::BitTable, Source};
    use ben_wire::pb;

    fn view(r: &pb::Record) -> RecordView {
        RecordView::encode(r).unwrap()
    }

    #[test]
    fn route_only_keeps_what_routes_need() {
        let src = "schema s v1 { a: int  b: string }\npack p on s v1 {\n flag x = a > 1\n flag y = b starts_with \"q\"\n flag z = x and a < 10\n meta m = if y then \"Y\" else \"N\"\n route lucius when not z\n}";
        let c = compile(
            &[Source::new("t.bspec", src)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let r = route_only(&c.program.packs[0]);
        assert_eq!(r.order, vec![Def::Flag(0), Def::Flag(2)]);
        let routes = Routes::new(c.program.clone());
        let mk = |a: i64| pb::Record {
            schema: "s".into(),
            schema_version: 1,
            body: serde_json::to_vec(&serde_json::json!({"a": a, "b": "q"})).unwrap(),
            ..Default::default()
        };
        assert_eq!(routes.route(&view(&mk(5))).unwrap(), RouteTarget::Spine);
        assert_eq!(routes.route(&view(&mk(50))).unwrap(), RouteTarget::Lucius);
        // The same records as the sidecar sends them (encoded values): only
        // the fields routes read are decoded, with the same answers.
        assert_eq!(routes.keep[0], vec![true, false], "b feeds no route");
        let enc = |a: i64| pb::Record {
            schema: "s".into(),
            schema_version: 1,
            values: ben_bitspec::codec::to_bytes(&[
                ben_bitspec::Value::Int(a),
                ben_bitspec::Value::Str("q".into()),
            ]),
            ..Default::default()
        };
        assert_eq!(routes.route(&view(&enc(5))).unwrap(), RouteTarget::Spine);
        assert_eq!(routes.route(&view(&enc(50))).unwrap(), RouteTarget::Lucius);
        // A value of the wrong type in a field a route reads is refused.
        let bad = pb::Record {
            values: ben_bitspec::codec::to_bytes(&[
                ben_bitspec::Value::Str("x".into()),
                ben_bitspec::Value::Null,
            ]),
            ..enc(0)
        };
        assert!(routes.route(&view(&bad)).is_err());
        assert!(routes
            .route(&view(&pb::Record {
                schema: "nope".into(),
                ..Default::default()
            }))
            .is_err());
    }

    /// A record of an older version is routed by the routes of the
    /// version its declared migrations lead to (what the spine and
    /// `benctl eval` evaluate it as), not sent to a spine for lack of
    /// routes on its own version.
    #[test]
    fn old_versions_are_migrated_then_routed() {
        let src = "schema s v1 { a: int  p: string }\nschema s v2 { a: int  p: string  b: int }\nschema s v3 { a: int  p: string  b: int }\nmigrate s v1 -> v2 {\n b = a * 2\n}\npack p on s v2 {\n flag big = b > 10 and p starts_with \"/x\"\n route lucius when big\n}";
        let c = compile(
            &[Source::new("t.bspec", src)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let routes = Routes::new(c.program.clone());
        let v1 = |a: i64, p: &str| pb::Record {
            schema: "s".into(),
            schema_version: 1,
            values: ben_bitspec::codec::to_bytes(&[
                ben_bitspec::Value::Int(a),
                ben_bitspec::Value::Str(p.into()),
            ]),
            ..Default::default()
        };
        // b = 2a: over 10 from a = 6.
        assert_eq!(
            routes.route(&view(&v1(6, "/x"))).unwrap(),
            RouteTarget::Lucius
        );
        assert_eq!(
            routes.route(&view(&v1(5, "/x"))).unwrap(),
            RouteTarget::Spine
        );
        assert_eq!(
            routes.route(&view(&v1(6, "/y"))).unwrap(),
            RouteTarget::Spine
        );
        // The same as a JSON body.
        let json = pb::Record {
            values: vec![],
            body: serde_json::to_vec(&serde_json::json!({"a": 9, "p": "/x/1"})).unwrap(),
            ..v1(0, "")
        };
        assert_eq!(routes.route(&view(&json)).unwrap(), RouteTarget::Lucius);
        // v3 has no pack and no migration: nothing routes it away.
        let v3 = pb::Record {
            schema_version: 3,
            body: serde_json::to_vec(&serde_json::json!({"a": 9, "p": "/x", "b": 99})).unwrap(),
            ..json.clone()
        };
        assert_eq!(routes.route(&view(&v3)).unwrap(), RouteTarget::Spine);
        // A v1 record the migration cannot read is refused, as the spine
        // would refuse it.
        let bad = pb::Record {
            body: serde_json::to_vec(&serde_json::json!({"a": "x", "p": "/x"})).unwrap(),
            ..json
        };
        assert!(routes.route(&view(&bad)).is_err());
    }
}
