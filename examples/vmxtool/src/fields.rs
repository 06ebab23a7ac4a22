//! `vmxtool fields`: every VMCS field of the SDM's Appendix B with its encoding, width, type and
//! access, from the `vmcs` crate's field table.

use std::process::ExitCode;

use serde_json::{Value, json};
use vmcs::{FieldInfo, FieldWidth, fields};

/// Arguments of `vmxtool fields`.
#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON list of objects with `name`, `encoding` (integer), `width` (16, 32, 64 or
    /// "natural"), `type` ("control", "exit_info", "guest" or "host") and `read_only`.
    #[arg(long)]
    json: bool,
}

/// Runs `vmxtool fields`.
pub fn run(args: Args) -> Result<ExitCode, String> {
    let text = if args.json {
        let list: Vec<Value> = fields::ALL.iter().map(to_json).collect();
        serde_json::to_string_pretty(&list).map_err(|e| format!("cannot encode JSON: {e}"))?
    } else {
        table()
    };
    crate::io::write_stdout(&format!("{text}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// One field as `vmxtool fields --json` prints it.
fn to_json(info: &FieldInfo) -> Value {
    let width = match info.width() {
        FieldWidth::Bits16 => json!(16),
        FieldWidth::Bits32 => json!(32),
        FieldWidth::Bits64 => json!(64),
        FieldWidth::Natural => json!("natural"),
    };
    json!({
        "name": info.name,
        "encoding": info.encoding,
        "width": width,
        "type": info.field_type().name(),
        "read_only": info.read_only(),
    })
}

/// The human-readable table: one line per field, in Appendix B order.
fn table() -> String {
    let name_width = fields::ALL.iter().map(|i| i.name.len()).max().unwrap_or(4);
    let type_width = fields::ALL
        .iter()
        .map(|i| i.value_type.len())
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<name_width$}  {:<8}  {:<7}  {:<9}  {:<10}  {:<type_width$}  {}\n",
        "NAME", "ENCODING", "WIDTH", "TYPE", "ACCESS", "VALUE", "SDM NAME"
    );
    for info in &fields::ALL {
        let encoding = match info.high_encoding() {
            Some(high) => format!("{:#06x}/{:x}", info.encoding, high & 0xf),
            None => format!("{:#06x}", info.encoding),
        };
        out.push_str(&format!(
            "{:<name_width$}  {:<8}  {:<7}  {:<9}  {:<10}  {:<type_width$}  {}\n",
            info.name,
            encoding,
            info.width().name(),
            info.field_type().name(),
            if info.read_only() {
                "read-only"
            } else {
                "read-write"
            },
            info.value_type,
            info.sdm_name,
        ));
    }
    out.push_str(&format!(
        "{} fields; 64-bit ones list their high-half encoding after the slash",
        fields::COUNT
    ));
    out
}
