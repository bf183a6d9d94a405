//! virsh's tables (`list`, `domblklist`, `domiflist`): a header row, a
//! line of dashes, then the rows; every cell after a leading space, every
//! column padded to its widest cell plus two spaces, the last unpadded.

/// A table being built.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Add a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as virsh prints it, each line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows[0].len();
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in self.rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                out.push(' ');
                out.push_str(cell);
                if c + 1 < columns {
                    let pad = widths[c] - cell.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
            if i == 0 {
                let dashes: usize = widths.iter().map(|w| w + 3).sum();
                out.extend(std::iter::repeat_n('-', dashes));
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte for byte what `virsh -c test:///default list --all` printed
    /// after `define` of a domain `x` (virsh 9.0.0).
    #[test]
    fn list_as_virsh_prints_it() {
        let mut t = Table::new(&["Id", "Name", "State"]);
        t.row(vec!["1".into(), "test".into(), "running".into()]);
        t.row(vec!["-".into(), "x".into(), "shut off".into()]);
        assert_eq!(
            t.render(),
            " Id   Name   State\n\
             -----------------------\n \
             1    test   running\n \
             -    x      shut off\n"
        );
    }

    #[test]
    fn empty_list_and_iflist() {
        assert_eq!(
            Table::new(&["Id", "Name", "State"]).render(),
            " Id   Name   State\n--------------------\n"
        );
        let mut t = Table::new(&["Interface", "Type", "Source", "Model", "MAC"]);
        t.row(vec![
            "testnet0".into(),
            "network".into(),
            "default".into(),
            "-".into(),
            "aa:bb:cc:dd:ee:ff".into(),
        ]);
        assert_eq!(
            t.render(),
            " Interface   Type      Source    Model   MAC\n\
             ------------------------------------------------------------\n \
             testnet0    network   default   -       aa:bb:cc:dd:ee:ff\n"
        );
    }

    #[test]
    fn blklist() {
        let mut t = Table::new(&["Target", "Source"]);
        t.row(vec!["vda".into(), "/guest/diskimage1".into()]);
        assert_eq!(
            t.render(),
            " Target   Source\n-----------------------------\n vda      /guest/diskimage1\n"
        );
    }
}
