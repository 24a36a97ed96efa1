//! What each data row is: a token in a document (text models) or a patch of an image (vision
//! models), from the `.tokens.tsv` file that comes with an activation file.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Where a row comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum RowInfo {
    /// A token at `pos` of window `window` of document `doc`.
    Token {
        /// Document.
        doc: String,
        /// Window of the document (contexts never cross windows).
        window: String,
        /// Position in the window.
        pos: i64,
        /// The token's text as the tokenizer decodes it (`" the"`, `"\n"`): the table's `text`
        /// column, or its tokenizer piece decoded ([`decode_piece`]).
        token: String,
    },
    /// The patch at (`row`, `col`) of `image`.
    Patch {
        /// The image's path (relative to an images folder).
        image: String,
        /// Patch row.
        row: u32,
        /// Patch column.
        col: u32,
    },
}

/// The rows of a dataset, in data order.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    /// One entry per data row.
    pub rows: Vec<RowInfo>,
    /// Whether the table's pieces were byte-level BPE or SentencePiece (`Ġ`/`▁` mark a leading
    /// space), else WordPiece (`##` marks a continuation, other tokens are separate words).
    pub bpe: bool,
    /// Each row's (document, window) as a number, for contexts.
    windows: Vec<u32>,
}

impl TokenTable {
    /// Reads a tsv with a header: text rows need the columns `doc`, `window`, `pos`, `token`;
    /// image patches `image`, `patch_row`, `patch_col`. An error names the file and the line.
    pub fn read(path: &Path) -> Result<TokenTable> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        TokenTable::parse(path, &text)
    }

    /// [`TokenTable::read`] on the file's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<TokenTable> {
        let mut lines = text.lines();
        let header: Vec<&str> =
            lines.next().ok_or_else(|| Error::file(path, "is empty"))?.split('\t').collect();
        let col: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        let get = |names: &[&str]| names.iter().map(|n| col.get(n).copied()).collect::<Option<Vec<usize>>>();
        let (text_cols, image_cols) =
            (get(&["doc", "window", "pos", "token"]), get(&["image", "patch_row", "patch_col"]));
        // A harvest records each token's decoded text; older tables only its piece.
        let text_col = col.get("text").copied();
        if text_cols.is_none() && image_cols.is_none() {
            return Err(Error::file(
                path,
                "needs the columns doc, window, pos, token (text) or image, patch_row, patch_col (image patches)",
            ));
        }
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let bad = |what: &str| Error::file(path, format!("line {}: {what}", i + 2));
            let field = |c: usize| f.get(c).copied().ok_or_else(|| bad("has too few columns"));
            let info = if let Some(c) = &image_cols {
                RowInfo::Patch {
                    image: field(c[0])?.to_string(),
                    row: field(c[1])?.parse().map_err(|_| bad("patch_row is not a number"))?,
                    col: field(c[2])?.parse().map_err(|_| bad("patch_col is not a number"))?,
                }
            } else {
                let c = text_cols.as_ref().unwrap();
                let token = match text_col {
                    Some(t) => unescape(field(t)?),
                    None => field(c[3])?.to_string(),
                };
                RowInfo::Token {
                    doc: field(c[0])?.to_string(),
                    window: field(c[1])?.to_string(),
                    pos: field(c[2])?.parse().map_err(|_| bad("pos is not a number"))?,
                    token,
                }
            };
            rows.push(info);
        }
        let bpe = text_col.is_some()
            || rows.iter().any(
                |r| matches!(r, RowInfo::Token { token, .. } if token.starts_with(['\u{120}', '\u{2581}'])),
            );
        if text_col.is_none() {
            let wordpiece = !bpe;
            for r in rows.iter_mut() {
                if let RowInfo::Token { token, .. } = r {
                    *token = decode_piece(token, wordpiece);
                }
            }
        }
        let mut ids: HashMap<(&str, &str), u32> = HashMap::new();
        let windows = rows
            .iter()
            .map(|r| match r {
                RowInfo::Token { doc, window, .. } => {
                    let n = ids.len() as u32;
                    *ids.entry((doc.as_str(), window.as_str())).or_insert(n)
                }
                RowInfo::Patch { .. } => u32::MAX,
            })
            .collect();
        Ok(TokenTable { rows, bpe, windows })
    }

    /// Row `i`'s token as text is written: its characters (newlines and tabs as visible marks),
    /// and whether a space comes before it.
    pub fn display(&self, i: usize) -> (String, bool) {
        let Some(RowInfo::Token { token, .. }) = self.rows.get(i) else { return (self.label(i), true) };
        match token.strip_prefix(' ') {
            Some(rest) if !rest.is_empty() => (visible(rest), true),
            _ => (visible(token), false),
        }
    }

    /// Whether the rows are image patches.
    pub fn is_images(&self) -> bool {
        matches!(self.rows.first(), Some(RowInfo::Patch { .. }))
    }

    /// A short label of row `i` (its token, or image and patch).
    pub fn label(&self, i: usize) -> String {
        match self.rows.get(i) {
            Some(RowInfo::Token { token, .. }) => label_of(token),
            Some(RowInfo::Patch { image, row, col }) => format!("{image} [{row},{col}]"),
            None => format!("row {i}"),
        }
    }

    /// The rows around `i` in the same document and window, at most `radius` positions each side,
    /// in order (rows of one window are contiguous in the data).
    pub fn context(&self, i: usize, radius: usize) -> Vec<usize> {
        let Some(&w) = self.windows.get(i) else { return vec![i] };
        if w == u32::MAX {
            return vec![i];
        }
        let same = |j: usize| self.windows[j] == w;
        let lo = (i.saturating_sub(radius)..i).rev().take_while(|&j| same(j)).last().unwrap_or(i);
        let hi = (i + 1..(i + 1 + radius).min(self.rows.len())).take_while(|&j| same(j)).last().unwrap_or(i);
        (lo..=hi).collect()
    }
}

/// A token's text with what cannot be seen made visible: newlines `↵`, tabs `⇥`, carriage
/// returns `␍`, and a token of spaces only as `␣`s.
pub fn visible(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c == ' ') {
        return "␣".repeat(text.chars().count());
    }
    text.replace('\n', "↵").replace('\t', "⇥").replace('\r', "␍")
}

/// A token's short label (for lists of tokens): its visible text without the leading space.
pub fn label_of(text: &str) -> String {
    let t = text.trim_start_matches(' ');
    if t.is_empty() {
        visible(text)
    } else {
        visible(t)
    }
}

/// A tsv field written with `\\`, `\t`, `\n`, `\r` escapes.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The text of a tokenizer piece: byte-level BPE (`Ġthe` -> `" the"`, `Ċ` -> `"\n"`, bytes of a
/// character split over tokens as the replacement character), SentencePiece (`▁the` ->
/// `" the"`), or, when `wordpiece`, WordPiece (`##ing` -> `"ing"`, other tokens `" word"`).
pub fn decode_piece(piece: &str, wordpiece: bool) -> String {
    if wordpiece {
        return match piece.strip_prefix("##") {
            Some(rest) => rest.to_string(),
            None => format!(" {piece}"),
        };
    }
    if piece.contains('\u{2581}') {
        return piece.replace('\u{2581}', " ");
    }
    // GPT-2's byte-to-unicode map, reversed: printable bytes stand for themselves, the others
    // (0-32, 127-160, 173) for 256 + their rank.
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let others: Vec<u8> = (0u32..256).filter(|&b| !printable(b)).map(|b| b as u8).collect();
    let mut bytes = Vec::with_capacity(piece.len());
    for c in piece.chars() {
        let u = c as u32;
        if u < 256 && printable(u) {
            bytes.push(u as u8);
        } else if (256..256 + others.len() as u32).contains(&u) {
            bytes.push(others[(u - 256) as usize]);
        } else {
            // Not a byte-level piece: keep the character.
            bytes.extend_from_slice(c.to_string().as_bytes());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_stay_in_their_window_and_radius() {
        let mut text = String::from("row\tdoc\twindow\tpos\ttoken\n");
        // Two documents, the first in two windows: a, a, a | b, b (window 1) | c, c, c, c.
        let layout =
            [("a", 0), ("a", 0), ("a", 0), ("a", 1), ("a", 1), ("c", 0), ("c", 0), ("c", 0), ("c", 0)];
        for (i, (doc, w)) in layout.iter().enumerate() {
            text.push_str(&format!("{i}\t{doc}\t{w}\t{i}\tt{i}\n"));
        }
        let t = TokenTable::parse(Path::new("t.tsv"), &text).unwrap();
        assert!(!t.bpe);
        for i in 0..layout.len() {
            for radius in [0usize, 1, 2, 8] {
                let want: Vec<usize> = (0..layout.len())
                    .filter(|&j| layout[j] == layout[i] && j.abs_diff(i) <= radius)
                    .collect();
                assert_eq!(t.context(i, radius), want, "row {i}, radius {radius}");
            }
        }
        assert_eq!(t.display(3), (" t3".trim().to_string(), true));
    }

    #[test]
    fn pieces_and_texts_read_as_text() {
        assert_eq!(decode_piece("\u{120}the", false), " the");
        assert_eq!(decode_piece("\u{10A}", false), "\n");
        assert_eq!(decode_piece("\u{120}\u{120}\u{120}", false), "   ");
        // "据" (e6 8d ae) as byte-level characters.
        assert_eq!(decode_piece("\u{e6}\u{12f}\u{ae}", false), "据");
        assert_eq!(decode_piece("\u{2581}hello", false), " hello");
        assert_eq!(decode_piece("##ing", true), "ing");
        assert_eq!(visible("\n"), "↵");
        assert_eq!(label_of("   "), "␣␣␣");
        assert_eq!(label_of(" the"), "the");
        let tsv = "row\tsource\tdoc\twindow\tpos\ttoken_id\ttoken\ttext\n\
                   0\tm\t0\t0\t0\t504\tThe\tThe\n1\tm\t0\t0\t1\t2\t\u{120}cat\t cat\n2\tm\t0\t0\t2\t198\t\u{10A}\t\\n\n";
        let t = TokenTable::parse(Path::new("t.tsv"), tsv).unwrap();
        assert_eq!(t.display(1), ("cat".to_string(), true));
        assert_eq!(t.display(2), ("↵".to_string(), false));
        assert_eq!(t.label(2), "↵");
        // The same from pieces alone (an older table).
        let old =
            "row\tdoc\twindow\tpos\ttoken\n0\t0\t0\t0\tThe\n1\t0\t0\t1\t\u{120}cat\n2\t0\t0\t2\t\u{10A}\n";
        let t = TokenTable::parse(Path::new("t.tsv"), old).unwrap();
        assert_eq!(
            (t.display(1), t.display(2), t.label(1)),
            (("cat".into(), true), ("↵".into(), false), "cat".into())
        );
    }

    #[test]
    fn bad_tables_name_the_line() {
        let e = TokenTable::parse(Path::new("t.tsv"), "row\tdoc\twindow\tpos\ttoken\n0\ta\t0\tx\tt\n")
            .unwrap_err();
        assert!(e.to_string().contains("line 2: pos is not a number"), "{e}");
        let e = TokenTable::parse(Path::new("t.tsv"), "a\tb\n").unwrap_err();
        assert!(e.to_string().contains("needs the columns"), "{e}");
    }
}
