//! Where a contract's text lives: file names on disk, and lines in them.

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use prost_reflect::FileDescriptor;

use crate::Error;

/// Maps the names protobuf knows files by (`greeter/v1/greeter.proto`)
/// back to paths a person can open (`proto/greeter/v1/greeter.proto`).
#[derive(Debug, Clone)]
pub(crate) struct SourceMap {
    includes: Vec<PathBuf>,
}

impl SourceMap {
    pub(crate) fn new(includes: Vec<PathBuf>) -> Self {
        Self { includes }
    }

    /// The on-disk path of a file, or its protobuf name if it is not on
    /// disk (such as the embedded `sinew/options.proto`).
    pub(crate) fn display_path(&self, name: &str) -> String {
        self.includes
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .map_or_else(|| name.to_owned(), |path| path.display().to_string())
    }

    /// The 1-based line and column where the element at `path` (a
    /// source-code-info path) starts, from the compiler's source info.
    pub(crate) fn method_position(
        &self,
        file: &FileDescriptor,
        path: &[i32],
    ) -> Option<(usize, usize)> {
        let info = file.file_descriptor_proto().source_code_info.as_ref()?;
        let location = info.location.iter().find(|l| l.path == path)?;
        let line = usize::try_from(*location.span.first()?).ok()?;
        let column = usize::try_from(*location.span.get(1)?).ok()?;
        Some((line + 1, column + 1))
    }

    /// Turns protox's error into ours, with the file, line and column of
    /// its first label where it has one.
    pub(crate) fn compile_error(&self, error: &protox::Error) -> Error {
        let file = error
            .file()
            .map_or_else(|| "<contracts>".to_owned(), |name| self.display_path(name));
        let position = error.labels().and_then(|mut labels| {
            let label = labels.next()?;
            let source = error.source_code()?;
            let contents = source.read_span(label.inner(), 0, 0).ok()?;
            Some((contents.line() + 1, contents.column() + 1))
        });
        let (line, column) = position.unzip();
        Error::contract(file, line, column, error.to_string())
    }
}

/// Every `.proto` file under `dir`, sorted, as names relative to it.
pub(crate) fn find_protos(dir: &Path) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&folder, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                // protobuf names use forward slashes on every platform.
                let name = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}
