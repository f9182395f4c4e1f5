//! Aligned text tables as the registry page prints them: two-space indent, padded columns.

use std::fmt::Write;

/// Renders rows (the first may be a header) with each column padded to its widest cell plus
/// a gap. The last column is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}", width = widths[c] + GAP);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

const GAP: usize = 3;

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::render(&[
            vec!["TAG".into(), "VERSION".into()],
            vec!["stable".into(), "1.0.0".into()],
            vec!["beta".into(), "1.1.0-rc1".into()],
        ]);
        assert_eq!(
            t,
            "  TAG      VERSION\n  stable   1.0.0\n  beta     1.1.0-rc1\n"
        );
    }
}
