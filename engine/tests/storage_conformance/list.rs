//! The `list` step of the conformance suite: exactly the keys under a prefix, sorted, relative
//! to the store's prefix, never a neighbour's.

use super::{body, sorted, Backend, PREFIX, SIBLING_PREFIX};

/// `list(prefix)`: exactly the keys under the prefix, sorted, relative to the store's prefix.
pub(crate) async fn list(b: &Backend<'_>) {
    let n = b.name;
    assert_eq!(b.store.list("").await.unwrap(), Vec::<String>::new(), "[{n}] list of an empty store");

    let keys = [
        "top.jsonl",
        "a/bc",
        "a/b-c",
        "a/b.txt",
        "a/b/c.txt",
        "a/b/d/e.txt",
        "day=01/item-a000001.jsonl.zst",
        "day=01/item-b000001.jsonl.zst",
        "day=01/item-b000002.jsonl.zst",
        "day=01/item-c000001.jsonl.zst",
        "day=01/sub/deep/item-b000003.jsonl.zst",
        "day=02/item-b000001.jsonl.zst",
    ];
    // Neighbours in the same backing storage that the store must not see.
    let sibling_keys = ["day=01/item-b000009.jsonl.zst", "a/b/zzz", "top.jsonl"];
    let outside_keys = ["day=01/item-b000008.jsonl.zst", "a/b/yyy", "some/prefix.txt", "some/other/day=01/x"];
    for (i, k) in keys.iter().enumerate() {
        b.store.put(k, body(100 + i as u64, 10 + i)).await.unwrap_or_else(|e| panic!("[{n}] put {k}: {e}"));
    }
    for k in sibling_keys {
        b.sibling.put(k, body(200, 7)).await.unwrap_or_else(|e| panic!("[{n}] sibling put {k}: {e}"));
    }
    for k in outside_keys {
        b.unprefixed.put(k, body(300, 5)).await.unwrap_or_else(|e| panic!("[{n}] unprefixed put {k}: {e}"));
    }

    list_explicit_cases(b).await;
    list_against_the_model(b, &keys).await;
    list_relative_to_the_prefix(b, &keys, &sibling_keys, &outside_keys).await;

    // Leave the store empty for the other steps.
    for k in keys {
        b.store.delete(k).await.unwrap();
    }
    assert_eq!(b.store.list("").await.unwrap(), Vec::<String>::new(), "[{n}] list after deleting every key");
}

/// Explicit expectations for the cases that matter most.
async fn list_explicit_cases(b: &Backend<'_>) {
    let n = b.name;
    assert_eq!(
        b.store.list("day=01/item-b").await.unwrap(),
        ["day=01/item-b000001.jsonl.zst", "day=01/item-b000002.jsonl.zst"],
        "[{n}] a prefix that ends in the middle of a file name"
    );
    assert_eq!(
        b.store.list("a/b/").await.unwrap(),
        ["a/b/c.txt", "a/b/d/e.txt"],
        "[{n}] a directory prefix excludes its siblings a/bc, a/b-c, a/b.txt"
    );
    assert_eq!(
        b.store.list("a/b").await.unwrap(),
        ["a/b-c", "a/b.txt", "a/b/c.txt", "a/b/d/e.txt", "a/bc"],
        "[{n}] lexical (byte) order, not directory-walk order"
    );
    assert_eq!(
        b.store.list("day=01/sub/").await.unwrap(),
        ["day=01/sub/deep/item-b000003.jsonl.zst"],
        "[{n}] nested directories"
    );
}

/// Every prefix against the model: the keys that start with it, sorted.
async fn list_against_the_model(b: &Backend<'_>, keys: &[&str]) {
    let n = b.name;
    let prefixes = [
        "",
        "a",
        "a/",
        "a/b",
        "a/b/",
        "a/b/d",
        "a/bc",
        "day=0",
        "day=01",
        "day=01/",
        "day=01/item-",
        "day=01/item-b",
        "day=01/item-b000001.jsonl.zst",
        "day=01/sub/deep/item-b",
        "day=02/",
        "top",
        "top.jsonl",
        "nope",
        "nope/",
        "day=03/",
        "a/b/c.txt/",
    ];
    for p in prefixes {
        let expected = sorted(keys.iter().filter(|k| k.starts_with(p)).map(|k| k.to_string()).collect());
        let got = b.store.list(p).await.unwrap_or_else(|e| panic!("[{n}] list({p:?}): {e}"));
        assert_eq!(got, expected, "[{n}] list({p:?})");
    }
}

/// The other side of "relative to the store prefix": the unprefixed view sees full keys.
async fn list_relative_to_the_prefix(b: &Backend<'_>, keys: &[&str], sibling_keys: &[&str], outside_keys: &[&str]) {
    let n = b.name;
    let mut all: Vec<String> = keys.iter().map(|k| format!("{PREFIX}/{k}")).collect();
    all.extend(sibling_keys.iter().map(|k| format!("{SIBLING_PREFIX}/{k}")));
    all.extend(outside_keys.iter().map(|k| k.to_string()));
    assert_eq!(b.unprefixed.list("").await.unwrap(), sorted(all), "[{n}] unprefixed list(\"\")");
    assert_eq!(
        b.unprefixed.list("some/prefix/day=01/item-b").await.unwrap(),
        ["some/prefix/day=01/item-b000001.jsonl.zst", "some/prefix/day=01/item-b000002.jsonl.zst"],
        "[{n}] unprefixed list of a nested prefix"
    );
    assert_eq!(
        b.sibling.list("").await.unwrap(),
        sorted(sibling_keys.iter().map(|k| k.to_string()).collect()),
        "[{n}] sibling store sees only its own keys"
    );
}

