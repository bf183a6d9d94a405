//! `vireo img info`.

use std::process::ExitCode;

use super::create::open_read_only;
use super::size::human_size;
use super::{ImgError, InfoArgs, OutputFormat};

pub fn info_command(args: &InfoArgs) -> Result<ExitCode, ImgError> {
    let disk = open_read_only(&args.file, args.format)?;
    let actual = disk
        .host_allocated_bytes()
        .map_err(|e| ImgError::block(&e))?;
    let name = args.file.display().to_string();
    let mut json = serde_json::Map::new();
    json.insert("virtual-size".into(), disk.size().into());
    json.insert("filename".into(), name.clone().into());
    json.insert("format".into(), disk.format().name().into());
    json.insert("actual-size".into(), actual.into());
    json.insert("dirty-flag".into(), false.into());
    match args.output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&serde_json::Value::Object(json))
                .map_err(|e| ImgError::failure(e.to_string()))?;
            println!("{text}");
        }
        OutputFormat::Human => {
            println!("image: {name}");
            println!("file format: {}", disk.format());
            println!(
                "virtual size: {} ({} bytes)",
                human_size(disk.size()),
                disk.size()
            );
            println!("disk size: {}", human_size(actual));
        }
    }
    Ok(ExitCode::SUCCESS)
}
