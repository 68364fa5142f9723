//! langevin-plot: PNG line charts, histograms, traces and reliability diagrams with a bundled font.
