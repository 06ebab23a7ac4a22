//! The hostile-JSON campaign the crates' `hostile_serde` tests share (included by path): the
//! serialized form of a real value with some nodes replaced by arbitrary JSON, and arbitrary
//! text. Deserialization must give an error, or a value that keeps the type's invariants and
//! survives a second round trip unchanged; never a panic.
#![allow(dead_code)]

use std::fmt::Debug;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A JSON value to put in place of a node.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<u64>().prop_map(Value::from),
        3 => (0..300u64).prop_map(Value::from),
        2 => (0..64u32).prop_map(|b| Value::from(1u64 << b)),
        2 => (0..64u32).prop_map(|b| Value::from((1u64 << b) - 1)),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => Just(json!(1e300)),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        2 => "[a-zA-Z_0-9]{0,12}".prop_map(Value::from),
        1 => Just(json!([])),
        1 => Just(json!({})),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| json!([a, b])),
        1 => Just(json!({"": 0})),
    ]
}

/// One case: node replacements (by pre-order index, modulo the node count) and a text.
#[derive(Debug, Clone)]
pub struct Campaign {
    edits: Vec<(u32, Value)>,
    text: String,
}

impl Campaign {
    /// The strategy of the cases.
    pub fn strategy() -> impl Strategy<Value = Campaign> {
        (
            proptest::collection::vec((any::<u32>(), leaf()), 1..4),
            prop_oneof![
                "[-0-9a-fx.e\\[\\]{}\":, ]{0,24}",
                any::<u64>().prop_map(|v| v.to_string()),
                Just(String::from("{\"\":1}")),
            ],
        )
            .prop_map(|(edits, text)| Campaign { edits, text })
    }

    /// Runs the case on each of `samples`: `invariant` must hold of every value that
    /// deserializes.
    pub fn run<T>(&self, samples: &[T], invariant: impl Fn(&T) -> bool) -> Result<(), TestCaseError>
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        for sample in samples {
            let mut value = serde_json::to_value(sample).unwrap();
            let unchanged: T = serde_json::from_value(value.clone()).unwrap();
            prop_assert_eq!(&unchanged, sample, "the sample does not round-trip");
            for (at, leaf) in &self.edits {
                let count = nodes(&value);
                replace(&mut value, *at as usize % count, leaf.clone());
            }
            if let Ok(v) = serde_json::from_value::<T>(value.clone()) {
                check(&v, &invariant, &value)?;
            }
        }
        if let Ok(v) = serde_json::from_str::<T>(&self.text) {
            check(&v, &invariant, &Value::from(self.text.clone()))?;
        }
        Ok(())
    }
}

fn check<T>(v: &T, invariant: &impl Fn(&T) -> bool, from: &Value) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    prop_assert!(invariant(v), "{:?} from {} breaks the invariant", v, from);
    let again = serde_json::to_value(v).unwrap();
    let back: T = serde_json::from_value(again.clone()).map_err(|e| {
        TestCaseError::fail(format!(
            "{v:?} from {from} serializes to {again}, which does not decode: {e}"
        ))
    })?;
    prop_assert_eq!(&back, v, "second round trip of {}", from);
    Ok(())
}

fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(nodes).sum(),
        Value::Object(o) => o.values().map(nodes).sum(),
        _ => 0,
    }
}

/// Replaces the `n`th node in pre-order; returns how many nodes were passed.
fn replace(v: &mut Value, n: usize, with: Value) -> usize {
    if n == 0 {
        *v = with;
        return 0;
    }
    let mut seen = 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => Vec::new(),
    };
    for child in children {
        let size = nodes(child);
        if n - seen < size {
            replace(child, n - seen, with);
            return 0;
        }
        seen += size;
    }
    seen
}
