//! The markdown the bench prints, saves, and puts into the README between the markers.

use std::io;
use std::path::Path;

pub const START: &str = "<!-- bench:start -->";
pub const END: &str = "<!-- bench:end -->";

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub rotator: String,
    pub peer: String,
    pub goal: String,
}

impl Row {
    pub fn new(measure: &str, rotator: String, peer: String, goal: &str) -> Row {
        Row {
            measure: measure.to_string(),
            rotator,
            peer,
            goal: goal.to_string(),
        }
    }
}

/// The results table with its column headers.
pub fn table(rows: &[Row], peer_header: &str) -> String {
    let mut t = format!(
        "| Measure | vault-rotator | {peer_header} | Goal; Vault Agent (published, not measured here) |\n|---|---|---|---|\n"
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {} | {} |\n",
            cell(&r.measure),
            cell(&r.rotator),
            cell(&r.peer),
            cell(&r.goal)
        );
    }
    t
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "<br>")
}

/// A bulleted list.
pub fn bullets(items: &[String]) -> String {
    items.iter().map(|i| format!("- {i}\n")).collect()
}

/// Replaces what lies between the bench markers of `readme` with `section`, creating the file
/// (with just the markers) when it does not exist. The file is read right before it is written,
/// and nothing outside the markers changes.
pub fn rewrite_readme(readme: &Path, section: &str) -> io::Result<()> {
    let text = match std::fs::read_to_string(readme) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => format!("{START}\n{END}\n"),
        Err(e) => return Err(e),
    };
    let updated = replace_between_markers(&text, section).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} lacks the {START} … {END} markers", readme.display()),
        )
    })?;
    std::fs::write(readme, updated)
}

fn replace_between_markers(text: &str, section: &str) -> Option<String> {
    let start = text.find(START)? + START.len();
    let end = start + text[start..].find(END)?;
    Some(format!(
        "{}\n{}\n{}",
        &text[..start],
        section.trim_end(),
        &text[end..]
    ))
}

/// Log lines carry terminal colours when the agent thinks it may; drop them for markdown.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marked_section_changes() {
        let text = format!("# T\nbefore\n{START}\nold\n{END}\nafter\n");
        let out = replace_between_markers(&text, "new table\n").expect("markers");
        assert_eq!(
            out,
            format!("# T\nbefore\n{START}\nnew table\n{END}\nafter\n")
        );
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn missing_markers_are_an_error() {
        assert!(replace_between_markers("no markers", "x").is_none());
    }

    #[test]
    fn pipes_in_cells_are_escaped() {
        let t = table(&[Row::new("a|b", "1".into(), "2".into(), "3")], "peer");
        assert!(t.contains("| a\\|b | 1 | 2 | 3 |"));
    }
}
