//! JSON round trips of values that may be NaN.
//!
//! serde_json writes a non-finite `f64` as `null` and refuses to read `null`
//! back as an `f64`. Transform states hold NaN where a quantity was not
//! evaluated yet (the log posterior right after `init`), so without help a
//! checkpoint taken then could not be reloaded. Mark such fields with
//! `#[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]`
//! (or `vec_f64_or_nan`): `null` reads back as NaN. (±∞ also becomes `null`
//! and reads back as NaN; states never hold an infinite value that matters,
//! since a non-finite log posterior is reported and not applied.)

use serde::{Deserialize, Deserializer};

/// Read a number, or `null` as NaN.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Read a list of numbers, each `null` as NaN.
pub fn vec_f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct S {
        #[serde(deserialize_with = "super::f64_or_nan")]
        a: f64,
        #[serde(deserialize_with = "super::vec_f64_or_nan")]
        b: Vec<f64>,
    }

    #[test]
    fn nan_survives_json() {
        let s = S {
            a: f64::NAN,
            b: vec![1.5, f64::NAN, -0.1],
        };
        let js = serde_json::to_string(&s).unwrap();
        assert_eq!(js, r#"{"a":null,"b":[1.5,null,-0.1]}"#);
        let back: S = serde_json::from_str(&js).unwrap();
        assert!(back.a.is_nan());
        assert_eq!(back.b[0], 1.5);
        assert!(back.b[1].is_nan());
        assert_eq!(back.b[2], -0.1);
        let fin: S = serde_json::from_str(r#"{"a":2.0,"b":[]}"#).unwrap();
        assert_eq!(fin.a, 2.0);
    }
}
