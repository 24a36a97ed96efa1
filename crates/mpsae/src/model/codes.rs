//! Sparse codes: the k picks of each row, in pursuit order.

use mpsae_kernels::pursuit::NO_ATOM;

/// The codes of `n` rows: for each row, the `k` picks `(atom, value)` in the order the pursuit
/// chose them (the pursuit path). A row that stopped early (tolerance) has picks with atom
/// [`Codes::NO_ATOM`] and value 0 at the end. The same atom may appear more than once in a row;
/// the dense code of that atom is then the sum of its values, as in the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Codes {
    /// Number of rows.
    pub n: usize,
    /// Number of atoms of the dictionary (width of the dense form).
    pub c: usize,
    /// Picks per row.
    pub k: usize,
    /// Picked atom of each row and step, `n x k`.
    pub atoms: Vec<u32>,
    /// Value of each pick, `n x k`.
    pub values: Vec<f32>,
}

impl Codes {
    /// Marks a pick that did not happen.
    pub const NO_ATOM: u32 = NO_ATOM;

    /// The picks of row `i`, in pursuit order, without the missing ones.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let k = self.k;
        self.atoms[i * k..(i + 1) * k]
            .iter()
            .zip(&self.values[i * k..(i + 1) * k])
            .filter(|(&a, _)| a != NO_ATOM)
            .map(|(&a, &v)| (a as usize, v))
    }

    /// The dense `n x c` matrix of the reference (repeated picks summed in pursuit order).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.c];
        for i in 0..self.n {
            let row = &mut out[i * self.c..(i + 1) * self.c];
            for (a, v) in self.row(i) {
                row[a] += v;
            }
        }
        out
    }

    /// The dense code of row `i` per distinct atom it uses, in first-pick order.
    pub fn row_dense(&self, i: usize) -> Vec<(usize, f32)> {
        let mut out: Vec<(usize, f32)> = Vec::with_capacity(self.k);
        for (a, v) in self.row(i) {
            match out.iter_mut().find(|(b, _)| *b == a) {
                Some(e) => e.1 += v,
                None => out.push((a, v)),
            }
        }
        out
    }

    /// The gradient with respect to each pick's value, `n x k`, from the gradient of the dense
    /// codes (`g_dense(row, atom)`): every pick of an atom receives that atom's dense gradient,
    /// since the dense code is the sum of its picks.
    pub fn gradient_of_dense(&self, g_dense: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut g = vec![0f32; self.n * self.k];
        for i in 0..self.n {
            for t in 0..self.k {
                let a = self.atoms[i * self.k + t];
                if a != NO_ATOM {
                    g[i * self.k + t] = g_dense(i, a as usize);
                }
            }
        }
        g
    }
}
