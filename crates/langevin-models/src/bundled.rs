//! Small public data sets shipped in the repository's `data/` folder and
//! compiled into the library, so a bundled set can be named from any working
//! directory (`--data iris`). Sources and licences: `data/README.md`.

use crate::data::{load_csv_str, Dataset};
use crate::error::Result;

/// One bundled data set.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// Name on the command line (`--data iris`).
    pub name: &'static str,
    /// File name under `data/`.
    pub file: &'static str,
    /// Default target column.
    pub target: &'static str,
    /// Natural task: `"binary"`, `"multiclass"` or `"regression"`.
    pub task: &'static str,
    /// One line of description.
    pub description: &'static str,
    /// The CSV text.
    pub text: &'static str,
}

/// Every bundled data set.
pub const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "iris_virginica",
        file: "iris_virginica.csv",
        target: "virginica",
        task: "binary",
        description: "Fisher's iris, 150 flowers, 4 measurements; target: is the species virginica (1) or not (0)",
        text: include_str!("../../../data/iris_virginica.csv"),
    },
    Bundled {
        name: "iris",
        file: "iris.csv",
        target: "species",
        task: "multiclass",
        description: "Fisher's iris, 150 flowers, 4 measurements, 3 species (0 setosa, 1 versicolor, 2 virginica)",
        text: include_str!("../../../data/iris.csv"),
    },
    Bundled {
        name: "wine",
        file: "wine.csv",
        target: "cultivar",
        task: "multiclass",
        description: "UCI wine recognition, 178 wines, 13 chemical measurements, 3 cultivars",
        text: include_str!("../../../data/wine.csv"),
    },
    Bundled {
        name: "breast_cancer",
        file: "breast_cancer.csv",
        target: "malignant",
        task: "binary",
        description: "UCI breast cancer Wisconsin (diagnostic), 569 tumours, 30 features; target: malignant (1) or benign (0)",
        text: include_str!("../../../data/breast_cancer.csv"),
    },
    Bundled {
        name: "diabetes",
        file: "diabetes.csv",
        target: "progression",
        task: "regression",
        description: "Efron et al. diabetes, 442 patients, 10 baseline variables; target: disease progression after one year",
        text: include_str!("../../../data/diabetes.csv"),
    },
    Bundled {
        name: "digits",
        file: "digits.csv",
        target: "target",
        task: "multiclass",
        description: "UCI optical recognition of handwritten digits, 1797 8x8 images (pixels 0-16), 10 classes",
        text: include_str!("../../../data/digits.csv"),
    },
];

/// The bundled set called `name`, if any.
pub fn find(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}

impl Bundled {
    /// Parse with `target` (or the default target when `None`).
    pub fn load(&self, target: Option<&str>) -> Result<Dataset> {
        load_csv_str(
            &format!("bundled:{}", self.name),
            self.text,
            target.unwrap_or(self.target),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_set_loads() {
        let expect = [
            ("iris_virginica", 150, 4, Some(2)),
            ("iris", 150, 4, Some(3)),
            ("wine", 178, 13, Some(3)),
            ("breast_cancer", 569, 30, Some(2)),
            ("diabetes", 442, 10, None),
            ("digits", 1797, 64, Some(10)),
        ];
        for (name, n, d, classes) in expect {
            let b = find(name).unwrap();
            let ds = b.load(None).unwrap();
            assert_eq!((ds.n(), ds.d()), (n, d), "{name}");
            if let Some(k) = classes {
                assert_eq!(ds.class_labels().unwrap().len(), k, "{name}");
            }
        }
        let digits = find("digits").unwrap().load(None).unwrap();
        assert_eq!(digits.feature_names[0], "pixel_0");
        assert_eq!(digits.feature_names[63], "pixel_63");
        assert!(find("nope").is_none());
    }
}
