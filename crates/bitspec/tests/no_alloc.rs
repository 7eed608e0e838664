//! The compiled evaluator allocates nothing per record once warm: the shop
//! pack (flags over strings, ints and IPs, a string meta, a route) runs
//! 10,000 times under a counting allocator.

use ben_bitspec::{compile, compile::CompiledPack, lock::BitTable, Source, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// Counts this thread's allocations only: the test harness's own threads
// (output capture, timers) allocate whenever they like.
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: no count while the thread-local is being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn compiled_pack_evaluation_does_not_allocate() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/shop.bspec"
    ))
    .unwrap();
    let out = compile(
        &[Source::new("shop.bspec", src)],
        &BitTable::default(),
        Default::default(),
    )
    .unwrap();
    let pack = &out.program.packs[0];
    let schema = &out.program.schemas[pack.schema];
    let mk = |path: &str, status: i64, ip: &str| -> Vec<Value> {
        schema
            .fields
            .iter()
            .map(|f| match f.path.as_str() {
                "ts" => Value::Time(0),
                "method" => Value::Str("POST".into()),
                "path" => Value::Str(path.into()),
                "status" => Value::Int(status),
                "bytes" => Value::Int(10),
                "client.ip" => Value::Ip(ip.parse().unwrap()),
                "user.email" => Value::Str("a@example.com".into()),
                _ => Value::Null,
            })
            .collect()
    };
    let recs = [
        mk("/admin/login", 401, "203.0.113.9"),
        mk("/products", 200, "10.0.0.1"),
        mk("/x", 503, "1.2.3.4"),
    ];
    let compiled = CompiledPack::new(pack);
    let mut scratch = compiled.scratch();
    for r in &recs {
        compiled.eval(r, &mut scratch); // warm up: meta buffers reach their size
    }
    let before = allocs();
    let mut lucius = 0;
    for i in 0..10_000 {
        if compiled.eval(&recs[i % 3], &mut scratch) == ben_bitspec::ir::RouteTarget::Lucius {
            lucius += 1;
        }
    }
    let after = allocs();
    assert_eq!(lucius, 3333, "the route must really be evaluated");
    assert_eq!(after - before, 0, "allocations during 10,000 evaluations");
}
