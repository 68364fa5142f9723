//! Named parameter collections.
//!
//! A [`Params`] is a flat `f64` buffer plus a [`ParamLayout`] naming its
//! pieces. **Ravel order** (used by every dense method: dense VI, dense
//! Laplace, dense EKF, and by `samples.csv` columns): the tensors in the order
//! they were given to [`ParamLayout::new`], each flattened row-major (C order,
//! last index fastest). The flat index of element `idx` of tensor `k` is
//! `layout.offset(k) + row_major(idx, shape_k)`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One named tensor of a parameter collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Number of scalar elements (1 for a scalar with empty shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Names and shapes of a parameter collection, in ravel order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    specs: Vec<ParamSpec>,
    offsets: Vec<usize>,
    len: usize,
}

impl ParamLayout {
    /// Build a layout from `(name, shape)` pairs. Names must be unique and non-empty.
    pub fn new<S: Into<String>>(specs: impl IntoIterator<Item = (S, Vec<usize>)>) -> Result<Self> {
        let specs: Vec<ParamSpec> = specs
            .into_iter()
            .map(|(n, s)| ParamSpec {
                name: n.into(),
                shape: s,
            })
            .collect();
        let mut offsets = Vec::with_capacity(specs.len());
        let mut len = 0;
        for (i, s) in specs.iter().enumerate() {
            if s.name.is_empty() {
                return Err(Error::config("params", "parameter names must be non-empty"));
            }
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(Error::config(
                    "params",
                    format!("duplicate parameter name `{}`", s.name),
                ));
            }
            offsets.push(len);
            len += s.numel();
        }
        Ok(Self {
            specs,
            offsets,
            len,
        })
    }

    /// A layout with a single vector parameter called `name`.
    pub fn vector(name: &str, dim: usize) -> Self {
        Self {
            specs: vec![ParamSpec {
                name: name.to_string(),
                shape: vec![dim],
            }],
            offsets: vec![0],
            len: dim,
        }
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the layout holds no scalar.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in ravel order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Flat offset of tensor `k`.
    pub fn offset(&self, k: usize) -> usize {
        self.offsets[k]
    }

    /// Index of the tensor called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Flat range of the tensor called `name`.
    pub fn range(&self, name: &str) -> Option<std::ops::Range<usize>> {
        self.index_of(name)
            .map(|k| self.offsets[k]..self.offsets[k] + self.specs[k].numel())
    }

    /// One name per scalar, in ravel order: `name` for one-element tensors,
    /// else `name[i]` / `name[i,j]` with row-major indices.
    pub fn scalar_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len);
        for s in &self.specs {
            let n = s.numel();
            if n == 1 {
                out.push(s.name.clone());
                continue;
            }
            for flat in 0..n {
                let mut idx = vec![0; s.shape.len()];
                let mut r = flat;
                for (d, &dim) in s.shape.iter().enumerate().rev() {
                    idx[d] = r % dim;
                    r /= dim;
                }
                let idx: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
                out.push(format!("{}[{}]", s.name, idx.join(",")));
            }
        }
        out
    }
}

/// A named parameter collection: a layout and one flat `f64` buffer in ravel order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    layout: ParamLayout,
    values: Vec<f64>,
}

impl Params {
    /// Wrap `values` (in ravel order) with `layout`.
    pub fn new(layout: ParamLayout, values: Vec<f64>) -> Result<Self> {
        if values.len() != layout.len() {
            return Err(Error::DimensionMismatch {
                what: "parameter values",
                expected: layout.len(),
                got: values.len(),
            });
        }
        Ok(Self { layout, values })
    }

    /// A single vector parameter called `theta`.
    pub fn from_vec(values: Vec<f64>) -> Self {
        Self {
            layout: ParamLayout::vector("theta", values.len()),
            values,
        }
    }

    /// All zeros with the given layout.
    pub fn zeros(layout: ParamLayout) -> Self {
        let values = vec![0.0; layout.len()];
        Self { layout, values }
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The flat buffer, in ravel order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values
    }

    pub fn into_values(self) -> Vec<f64> {
        self.values
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values of the tensor called `name` (row-major).
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.layout.range(name).map(|r| &self.values[r])
    }

    /// Mutable values of the tensor called `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f64]> {
        self.layout.range(name).map(move |r| &mut self.values[r])
    }

    /// Same layout, other values.
    pub fn with_values(&self, values: Vec<f64>) -> Result<Self> {
        Self::new(self.layout.clone(), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ravel_order_is_declaration_then_row_major() {
        let layout = ParamLayout::new([("w", vec![2, 3]), ("b", vec![2]), ("s", vec![])]).unwrap();
        assert_eq!(layout.len(), 9);
        assert_eq!(layout.range("b"), Some(6..8));
        assert_eq!(layout.range("s"), Some(8..9));
        let names = layout.scalar_names();
        assert_eq!(names[0], "w[0,0]");
        assert_eq!(names[1], "w[0,1]");
        assert_eq!(names[3], "w[1,0]");
        assert_eq!(names[6], "b[0]");
        assert_eq!(names[8], "s");
        let p = Params::new(layout, (0..9).map(f64::from).collect()).unwrap();
        assert_eq!(p.get("b").unwrap(), &[6.0, 7.0]);
    }

    #[test]
    fn rejects_bad_layouts() {
        assert!(ParamLayout::new([("a", vec![1]), ("a", vec![2])]).is_err());
        assert!(ParamLayout::new([("", vec![1])]).is_err());
        let l = ParamLayout::vector("x", 3);
        assert!(matches!(
            Params::new(l, vec![0.0; 2]),
            Err(Error::DimensionMismatch {
                expected: 3,
                got: 2,
                ..
            })
        ));
    }
}
