//! The doc comment of every setting, for `herald config defaults` and
//! docs/SETTINGS.md: read from the structs that parse the configuration
//! (src/config.rs), so the two cannot drift apart.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=src/config.rs");
    let source = std::fs::read_to_string("src/config.rs").expect("src/config.rs");
    let mut out = String::new();
    let sections = [
        "EdgeConfig",
        "RoutingConfig",
        "PresenceConfig",
        "NotifyConfig",
    ];
    let mut tables = vec!["Config"];
    tables.extend(sections);
    tables.extend(["NamespaceConfig", "AppCredentials"]);
    for name in tables {
        let fields = fields(&source, name);
        let _ = writeln!(
            out,
            "/// `{name}`'s settings and their doc comments, in order.\n\
             pub(crate) const {}: &[(&str, &str)] = &[",
            const_name(name)
        );
        for (field, _, doc) in &fields {
            let _ = writeln!(out, "    ({field:?}, {doc:?}),");
        }
        out.push_str("];\n");
    }
    // The sections: `Config`'s fields whose type is a section's struct.
    out.push_str(
        "/// Each section's name (its TOML table) and settings, in order.\n\
         pub(crate) const SECTIONS: &[(&str, &[(&str, &str)])] = &[\n",
    );
    for (field, ty, _) in fields(&source, "Config") {
        if sections.contains(&ty.as_str()) {
            let _ = writeln!(out, "    ({field:?}, {}),", const_name(&ty));
        }
    }
    out.push_str("];\n");
    let path =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("settings_docs.rs");
    std::fs::write(path, out).expect("write settings_docs.rs");
}

fn const_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out + "_DOCS"
}

/// The `pub` fields of `pub struct <name> {` with their types and `///`
/// comments.
fn fields(source: &str, name: &str) -> Vec<(String, String, String)> {
    let start = format!("pub struct {name} {{");
    let mut lines = source.lines().skip_while(|l| l.trim() != start).skip(1);
    let mut found = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if line == "}" {
            break;
        }
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("pub ") {
            if let Some((field, ty)) = rest.split_once(':') {
                let ty = ty.trim().trim_end_matches(',').to_owned();
                found.push((field.trim().to_owned(), ty, doc.join(" ")));
            }
            doc.clear();
        } else if line.is_empty() {
            doc.clear();
        }
    }
    assert!(!found.is_empty(), "no fields found for {name}");
    found
}
