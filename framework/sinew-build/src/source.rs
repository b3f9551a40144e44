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

    /// The 1-based line and column of the option numbered `option` on the
    /// method at `method_path` (a source-code-info path), or of the method
    /// itself.
    pub(crate) fn method_position(
        &self,
        file: &FileDescriptor,
        method_path: &[i32],
        option: u32,
    ) -> Option<(usize, usize)> {
        // MethodDescriptorProto.options is field 4.
        self.option_position(file, method_path, 4, option)
    }

    /// The 1-based line and column of the option numbered `option` on the
    /// element at `element_path` (a source-code-info path, such as a
    /// message's), whose descriptor holds its options in field
    /// `options_field` (7 for a message, 4 for a method); or, where the
    /// option has no location of its own, of the element itself.
    pub(crate) fn option_position(
        &self,
        file: &FileDescriptor,
        element_path: &[i32],
        options_field: i32,
        option: u32,
    ) -> Option<(usize, usize)> {
        let option_path: Vec<i32> = element_path
            .iter()
            .copied()
            .chain([options_field, i32::try_from(option).unwrap_or(i32::MAX)])
            .collect();
        let info = file.file_descriptor_proto().source_code_info.as_ref()?;
        let location = info
            .location
            .iter()
            .find(|l| l.path == option_path)
            .or_else(|| info.location.iter().find(|l| l.path == element_path))?;
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
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if let Some(help) = error.help() {
            reason.push_str(&format!(" (help: {help})"));
        }
        // protox does not say which part of a message-valued option is
        // wrong; for sinew's own options, say what is allowed.
        if reason.contains("for option '(sinew.") {
            reason.push_str(SINEW_OPTION_FIELDS);
        }
        Error::contract(file, line, column, reason)
    }
}

const SINEW_OPTION_FIELDS: &str = "; (sinew.method) takes { timeout: \"2s\" \
    retry: { max_attempts initial_backoff max_backoff backoff_multiplier \
    retryable_status_codes } hedging: { max_attempts hedging_delay \
    non_fatal_status_codes } compensated_by: \"Refund\" auth: { public scopes } }; \
    see sinew/options.proto";

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
