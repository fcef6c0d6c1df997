//! A capsule written with the published guest SDK (`astrid-sdk` 0.7.2) that
//! uses the SDK's `fs` module: whole-file calls, a positional file handle,
//! directories, copy, rename and metadata. Run unmodified against every
//! provider kind by the tests.

use astrid_sdk::prelude::*;
use serde::Deserialize;

#[derive(Default)]
pub struct SdkFs;

#[derive(Deserialize)]
pub struct NoteArgs {
    dir: String,
    text: String,
}

#[capsule]
impl SdkFs {
    #[astrid::interceptor("notes")]
    fn notes(&self, args: NoteArgs) -> Result<serde_json::Value, SysError> {
        let dir = args.dir;
        fs::create_dir_all(&format!("{dir}/sub"))?;
        fs::write(&format!("{dir}/a.txt"), args.text.as_bytes())?;
        fs::append(&format!("{dir}/a.txt"), b"!")?;
        let file = fs::File::open_mode(&format!("{dir}/b.txt"), fs::OpenMode::ReadWrite)?;
        file.write_at(0, b"0123456789")?;
        file.set_len(4)?;
        let head = file.read_at(1, 2)?;
        let size = file.metadata()?.len();
        drop(file);
        fs::copy(&format!("{dir}/a.txt"), &format!("{dir}/sub/c.txt"))?;
        fs::rename(&format!("{dir}/b.txt"), &format!("{dir}/sub/b.txt"))?;
        let mut names: Vec<String> = fs::read_dir(&format!("{dir}/sub"))?
            .map(|entry| entry.file_name().to_string())
            .collect();
        names.sort();
        let copied = fs::read_to_string(&format!("{dir}/sub/c.txt"))?;
        let is_dir = fs::metadata(&format!("{dir}/sub"))?.is_dir();
        let removed = fs::remove_dir_all(&format!("{dir}/sub"))?;
        Ok(serde_json::json!({
            "copied": copied,
            "head": String::from_utf8_lossy(&head),
            "size": size,
            "names": names,
            "is_dir": is_dir,
            "removed": removed,
            "gone": !fs::exists(&format!("{dir}/sub"))?,
        }))
    }
}
