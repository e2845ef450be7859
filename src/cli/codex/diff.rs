//! A line diff in unified format, for `setup --dry-run` (the `similar` crate does the work).

use similar::TextDiff;

/// A unified diff of `old` against `new`, or an empty string when they are equal.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_is_shown_with_its_context() {
        let old = "a\nb\nc\nmodel = \"o3\"\nd\n";
        let new = "a\nb\nc\nmodel = \"gpt-5.5\"\nd\n";
        let d = unified(old, new, "config.toml", "config.toml (after setup)");
        assert!(
            d.starts_with("--- config.toml\n+++ config.toml (after setup)\n"),
            "{d}"
        );
        assert!(d.contains("-model = \"o3\"\n+model = \"gpt-5.5\"\n"), "{d}");
        assert!(d.contains(" c\n") && d.contains(" d\n"), "{d}");
        assert_eq!(unified(old, old, "x", "y"), "");
    }

    #[test]
    fn additions_to_an_empty_file() {
        let d = unified("", "model = \"gpt-5.5\"\n", "a", "b");
        assert!(d.contains("+model = \"gpt-5.5\"\n"), "{d}");
    }
}
