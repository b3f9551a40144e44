//! `sinew breaking`: the changes between two versions of a set of `.proto`
//! contracts that break callers or stored data.
//!
//! Each version is a folder of `.proto` files, compiled with protox: the
//! folder is the include root, sinew's own files (`sinew/options.proto`,
//! `sinew/events.proto`, `google/api/*.proto`) come from
//! [`sinew_build::SinewFiles`] and the well-known types from protox. The old
//! version is either another folder ([`load_dir`]) or the same folder at a
//! git ref ([`load_git`]); [`load_against`] picks one the way the command
//! line does. [`compare`] then lists the [`Finding`]s.
//!
//! Only elements of the old version's contract files are compared, matched
//! by fully qualified name (a message moved to another file is not a
//! break); `google/protobuf/*`, `google/api/*` and `sinew/*` files are never
//! compared. A finding points at the element in the new version; for
//! something removed, at the element that held it in the new version (the
//! message, the service, or the `package` statement of the same file), else
//! at the old version's location ([`Finding::version`] says which).
//!
//! # Rules
//!
//! Every rule has a stable id ([`Rule::id`]):
//!
//! - `PACKAGE_REMOVED`: no file of the new version has the package.
//!   `package shop.v1;` gone. The package's services, messages and enums
//!   are not reported one by one.
//! - `SERVICE_REMOVED`: a service removed or renamed (`service Orders` →
//!   `service OrderService`). Its methods are not reported one by one.
//! - `METHOD_REMOVED`: a method removed or renamed (`rpc Get` → `rpc Fetch`).
//! - `MESSAGE_REMOVED`: a message removed or renamed. Its nested messages
//!   and enums are not reported one by one.
//! - `ENUM_REMOVED`: an enum removed or renamed.
//! - `ENUM_VALUE_REMOVED`: an enum value removed or renamed without its
//!   number being reserved (`STATUS_PAID = 2;` deleted, no `reserved 2;`).
//! - `ENUM_VALUE_NUMBER_CHANGED`: `STATUS_PAID = 2;` became
//!   `STATUS_PAID = 3;`.
//! - `FIELD_REMOVED`: a field number gone without being reserved
//!   (`int64 total = 3;` deleted, no `reserved 3;`).
//! - `FIELD_NUMBER_REUSED`: a number reserved in the old version now used
//!   (`reserved 3;` → `string note = 3;`), or a field replaced by another
//!   one on the same number: `int64 total = 3;` → `string note = 3;` (a
//!   different name with an incompatible type, or with the old name now
//!   reserved).
//! - `FIELD_TYPE_CHANGED`: same number, wire-incompatible type
//!   (`int32 count = 2;` → `string count = 2;`). Allowed:
//!   int32/uint32/int64/uint64/bool/enum among themselves, sint32/sint64,
//!   fixed32/sfixed32, fixed64/sfixed64, string/bytes. Messages and enums
//!   are compared by full name.
//! - `FIELD_CARDINALITY_CHANGED`: singular ↔ repeated ↔ map
//!   (`string tag = 4;` → `repeated string tag = 4;`), moved out of a
//!   oneof, or into a oneof that holds another field that already existed.
//! - `FIELD_RENAMED`: same number and compatible type, new name
//!   (`string note = 5;` → `string comment = 5;`): JSON callers break.
//! - `METHOD_STREAMING_CHANGED`: `rpc Watch(Req) returns (Resp)` →
//!   `rpc Watch(Req) returns (stream Resp)`.
//! - `METHOD_TYPE_CHANGED`: `rpc Get(GetRequest)` → `rpc Get(FetchRequest)`
//!   (request or response message, by full name).
//! - `IDEMPOTENCY_WEAKENED`: `idempotency_level` went down in the order
//!   `IDEMPOTENCY_UNKNOWN` < `IDEMPOTENT` < `NO_SIDE_EFFECTS`
//!   (`NO_SIDE_EFFECTS` → `IDEMPOTENT`): clients built on the old contract
//!   still retry or hedge by the old level.
//! - `EVENT_SUBJECT_CHANGED`: a `(sinew.event)` message whose `subject`
//!   changed (`"shop.orders.paid"` → `"shop.orders.settled"`), or whose
//!   `(sinew.event)` option is gone: subscribers stop receiving it.
//! - `EVENT_REMOVED`: a `(sinew.event)` message removed or renamed. It is
//!   reported instead of `MESSAGE_REMOVED`, not in addition.
//! - `SAGA_STATE_CHANGED`: a `(sinew.saga_state)` message lost the option,
//!   changed its `saga` name, or was removed (instead of `MESSAGE_REMOVED`);
//!   or a field of it, or of a message its fields use (recursively), was
//!   removed without reservation, changed type incompatibly, had its number
//!   reused or changed cardinality (instead of `FIELD_REMOVED`,
//!   `FIELD_TYPE_CHANGED`, `FIELD_NUMBER_REUSED`,
//!   `FIELD_CARDINALITY_CHANGED`): stored sagas could not be resumed.
//!   `name = 1;` in `message PlaceOrderState { option (sinew.saga_state) =
//!   { saga: "place_order" }; ... }` deleted without `reserved 1;`.
//!
//! Not breaking: adding fields, messages, enums, services, methods or enum
//! values; strengthening idempotency; adding reserved ranges or names;
//! proto3 `optional`; comments and formatting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost_reflect::{
    DescriptorPool, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, OneofDescriptor, ServiceDescriptor,
};
use serde::Serialize;

/// Why a version of the contracts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BreakingError {
    /// A folder or file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The reason.
        #[source]
        source: std::io::Error,
    },
    /// The contracts folder is not a folder.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The contracts folder holds no `.proto` file.
    #[error("no .proto files under {}", .0.display())]
    NoContracts(PathBuf),
    /// The contracts do not compile; `detail` is protox's message, with
    /// the file, line and column.
    #[error("the contracts in {origin} do not compile: {detail}")]
    Compile {
        /// The folder, or the folder at a git ref.
        origin: String,
        /// protox's message: `orders/v1/orders.proto:4:3: ...`.
        detail: String,
    },
    /// `git` could not be started.
    #[error("cannot run git (is it installed?): {0}")]
    GitMissing(#[source] std::io::Error),
    /// The contracts folder is not inside a git repository.
    #[error(
        "`{git_ref}` is not a directory, and {} is not inside a git repository to read it as a git ref: {detail}",
        dir.display()
    )]
    NotARepository {
        /// The ref asked for.
        git_ref: String,
        /// The contracts folder.
        dir: PathBuf,
        /// What git said.
        detail: String,
    },
    /// The ref names no commit of the repository.
    #[error(
        "`{git_ref}` is neither a directory nor a commit, branch or tag of the git repository at {}",
        repo.display()
    )]
    UnknownRef {
        /// The ref asked for.
        git_ref: String,
        /// The repository's root.
        repo: PathBuf,
    },
    /// A git command failed.
    #[error("`git {command}` failed: {detail}")]
    Git {
        /// The command's arguments.
        command: String,
        /// What git said.
        detail: String,
    },
    /// The old version could not be written out to be compiled.
    #[error("cannot write the old contracts into a temporary folder: {0}")]
    TempDir(#[source] std::io::Error),
}

/// One version of the contracts, compiled.
#[derive(Debug, Clone)]
pub struct Contracts {
    pool: DescriptorPool,
    files: BTreeSet<String>,
    origin: String,
}

impl Contracts {
    /// Every file compiled, the imports included.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The contract files (names under the include root), without sinew's
    /// own and Google's files.
    pub fn files(&self) -> impl Iterator<Item = &str> + '_ {
        self.files.iter().map(String::as_str)
    }

    /// Where this version comes from: a folder, or a folder at a git ref.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn file(&self, name: &str) -> Option<FileDescriptor> {
        if self.files.contains(name) {
            self.pool.get_file_by_name(name)
        } else {
            None
        }
    }
}

/// A breaking-change rule; [`Rule::id`] is its stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rule {
    /// A package no new file has.
    PackageRemoved,
    /// A service removed or renamed.
    ServiceRemoved,
    /// A method removed or renamed.
    MethodRemoved,
    /// A message removed or renamed.
    MessageRemoved,
    /// An enum removed or renamed.
    EnumRemoved,
    /// An enum value removed or renamed without its number reserved.
    EnumValueRemoved,
    /// An enum value's number changed.
    EnumValueNumberChanged,
    /// A field number gone without being reserved.
    FieldRemoved,
    /// A reserved or formerly used field number taken by another field.
    FieldNumberReused,
    /// A field's type changed incompatibly.
    FieldTypeChanged,
    /// A field became repeated, singular or a map, or moved into or out of
    /// a oneof.
    FieldCardinalityChanged,
    /// A field renamed (JSON callers break).
    FieldRenamed,
    /// A method's client or server streaming changed.
    MethodStreamingChanged,
    /// A method's request or response message changed.
    MethodTypeChanged,
    /// A method's `idempotency_level` went down.
    IdempotencyWeakened,
    /// An event's subject changed, or its `(sinew.event)` option is gone.
    EventSubjectChanged,
    /// An event message removed or renamed.
    EventRemoved,
    /// A saga's stored state would no longer be readable.
    SagaStateChanged,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 18] = [
        Rule::PackageRemoved,
        Rule::ServiceRemoved,
        Rule::MethodRemoved,
        Rule::MessageRemoved,
        Rule::EnumRemoved,
        Rule::EnumValueRemoved,
        Rule::EnumValueNumberChanged,
        Rule::FieldRemoved,
        Rule::FieldNumberReused,
        Rule::FieldTypeChanged,
        Rule::FieldCardinalityChanged,
        Rule::FieldRenamed,
        Rule::MethodStreamingChanged,
        Rule::MethodTypeChanged,
        Rule::IdempotencyWeakened,
        Rule::EventSubjectChanged,
        Rule::EventRemoved,
        Rule::SagaStateChanged,
    ];

    /// The stable id, such as `FIELD_REMOVED`.
    pub fn id(&self) -> &'static str {
        match self {
            Rule::PackageRemoved => "PACKAGE_REMOVED",
            Rule::ServiceRemoved => "SERVICE_REMOVED",
            Rule::MethodRemoved => "METHOD_REMOVED",
            Rule::MessageRemoved => "MESSAGE_REMOVED",
            Rule::EnumRemoved => "ENUM_REMOVED",
            Rule::EnumValueRemoved => "ENUM_VALUE_REMOVED",
            Rule::EnumValueNumberChanged => "ENUM_VALUE_NUMBER_CHANGED",
            Rule::FieldRemoved => "FIELD_REMOVED",
            Rule::FieldNumberReused => "FIELD_NUMBER_REUSED",
            Rule::FieldTypeChanged => "FIELD_TYPE_CHANGED",
            Rule::FieldCardinalityChanged => "FIELD_CARDINALITY_CHANGED",
            Rule::FieldRenamed => "FIELD_RENAMED",
            Rule::MethodStreamingChanged => "METHOD_STREAMING_CHANGED",
            Rule::MethodTypeChanged => "METHOD_TYPE_CHANGED",
            Rule::IdempotencyWeakened => "IDEMPOTENCY_WEAKENED",
            Rule::EventSubjectChanged => "EVENT_SUBJECT_CHANGED",
            Rule::EventRemoved => "EVENT_REMOVED",
            Rule::SagaStateChanged => "SAGA_STATE_CHANGED",
        }
    }

    /// The rule with this id.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.id() == id)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Which version a finding's location is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The new version (the folder being checked).
    New,
    /// The old version: what the finding is about has no place in the new
    /// one.
    Old,
}

/// A breaking change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, as named under its include root (`orders/v1/orders.proto`).
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
    /// Whether `file`, `line` and `column` are in the new or the old
    /// version.
    pub version: Version,
    /// The rule broken.
    pub rule: Rule,
    /// What changed, and whom it breaks.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.rule, self.message
        )?;
        if self.version == Version::Old {
            f.write_str(" (location in the old version)")?;
        }
        Ok(())
    }
}

/// Compiles every `.proto` file under `dir` (recursively, hidden folders
/// aside; `dir` is the include root). Files under `sinew/` and `google/`
/// are not contracts: sinew and protox serve those.
pub fn load_dir(dir: &Path) -> Result<Contracts, BreakingError> {
    if !dir.is_dir() {
        return Err(BreakingError::NotADirectory(dir.to_path_buf()));
    }
    let names = find_protos(dir)?;
    if names.is_empty() {
        return Err(BreakingError::NoContracts(dir.to_path_buf()));
    }
    compile(dir, &names, dir.display().to_string())
}

/// Compiles the `.proto` files under `dir` as they were at `git_ref`, in
/// the git repository holding `dir`. A folder that held no contracts at
/// that ref gives empty contracts (everything is new).
pub fn load_git(dir: &Path, git_ref: &str) -> Result<Contracts, BreakingError> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?.map_err(|detail| {
        BreakingError::NotARepository {
            git_ref: git_ref.to_owned(),
            dir: dir.to_path_buf(),
            detail,
        }
    })?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim_end_matches(['\n', '\r']));
    let read = |path: &Path, source| BreakingError::Read {
        path: path.to_path_buf(),
        source,
    };
    let top = top.canonicalize().map_err(|e| read(&top, e))?;
    let abs_dir = dir.canonicalize().map_err(|e| read(dir, e))?;
    let prefix = abs_dir
        .strip_prefix(&top)
        .map_err(|_| BreakingError::NotARepository {
            git_ref: git_ref.to_owned(),
            dir: dir.to_path_buf(),
            detail: format!("it lies outside the repository root {}", top.display()),
        })?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");

    let commit = git(
        &top,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{git_ref}^{{commit}}"),
        ],
    )?
    .map_err(|_| BreakingError::UnknownRef {
        git_ref: git_ref.to_owned(),
        repo: top.clone(),
    })?;
    let commit = String::from_utf8_lossy(&commit).trim().to_owned();

    let pathspec = if prefix.is_empty() { "." } else { &prefix };
    let listing = git_ok(
        &top,
        &[
            "ls-tree",
            "-r",
            "-z",
            "--full-name",
            "--name-only",
            &commit,
            "--",
            pathspec,
        ],
    )?;
    let temp = tempfile::tempdir().map_err(BreakingError::TempDir)?;
    let mut names = Vec::new();
    for path in String::from_utf8_lossy(&listing).split('\0') {
        if !path.ends_with(".proto") {
            continue;
        }
        let name = if prefix.is_empty() {
            path
        } else {
            match path
                .strip_prefix(prefix.as_str())
                .and_then(|p| p.strip_prefix('/'))
            {
                Some(name) => name,
                None => continue,
            }
        };
        // Every file is written out, for the contracts' imports (a
        // vendored `google/rpc/status.proto`); only contracts are opened.
        let text = git_ok(&top, &["show", &format!("{commit}:{path}")])?;
        let target = temp.path().join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(BreakingError::TempDir)?;
        }
        std::fs::write(&target, text).map_err(BreakingError::TempDir)?;
        if is_contract(name) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    compile(
        temp.path(),
        &names,
        format!("{} at {git_ref}", dir.display()),
    )
}

/// The old version for `sinew breaking <dir> --against <against>`:
/// `against` as a folder if it is one, else `dir` at the git ref
/// `against`.
pub fn load_against(dir: &Path, against: &str) -> Result<Contracts, BreakingError> {
    let path = Path::new(against);
    if path.is_dir() {
        load_dir(path)
    } else {
        load_git(dir, against)
    }
}

/// Every breaking change from `old` to `new`, sorted by file, line and
/// column.
pub fn compare(old: &Contracts, new: &Contracts) -> Vec<Finding> {
    let mut run = Comparison::new(old, new);
    run.packages();
    for name in &old.files {
        let Some(file) = old.pool.get_file_by_name(name) else {
            continue;
        };
        if run.removed_packages.contains(file.package_name()) {
            continue;
        }
        for service in file.services() {
            run.service(&service);
        }
        for message in file.messages() {
            run.message(&message);
        }
        for enumeration in file.enums() {
            run.enumeration(&enumeration);
        }
    }
    let mut findings = run.findings;
    findings.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.version, a.rule, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.version, b.rule, &b.message))
    });
    findings.dedup();
    findings
}

/// Whether a file under the include root is a contract: not one of
/// sinew's or Google's files, nor in a hidden folder.
fn is_contract(name: &str) -> bool {
    !name.starts_with("sinew/")
        && !name.starts_with("google/")
        && !name.split('/').any(|part| part.starts_with('.'))
}

/// Every contract `.proto` file under `dir`, sorted, named relative to it
/// with `/` separators.
fn find_protos(dir: &Path) -> Result<Vec<String>, BreakingError> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| BreakingError::Read {
            path: folder.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| BreakingError::Read {
                path: folder.clone(),
                source,
            })?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let name = format!("{prefix}{file_name}");
            let kind = entry.file_type().map_err(|source| BreakingError::Read {
                path: entry.path(),
                source,
            })?;
            // Linked folders are not followed (no loops); linked files are.
            // Hidden folders (`.git`) are skipped.
            if kind.is_dir() {
                if file_name.starts_with('.') {
                    continue;
                }
                pending.push((entry.path(), format!("{name}/")));
            } else if file_name.ends_with(".proto") && entry.path().is_file() && is_contract(&name)
            {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Compiles `names` under the include root `root`.
fn compile(root: &Path, names: &[String], origin: String) -> Result<Contracts, BreakingError> {
    // Absolute, so that protox takes each name as relative to the include
    // root rather than to the current folder.
    let root = std::path::absolute(root).map_err(|source| BreakingError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    let chain = sinew_build::file_resolver(std::slice::from_ref(&root));
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_source_info(true).include_imports(true);
    for name in names {
        if let Err(error) = compiler.open_file(name) {
            // protox's `Debug` is its one-line form with the file, line
            // and column: `a.proto:3:5: expected ...`.
            return Err(BreakingError::Compile {
                origin,
                detail: format!("{error:?}"),
            });
        }
    }
    // protox's own pool keeps the options' extensions (`sinew.event`).
    Ok(Contracts {
        pool: compiler.descriptor_pool(),
        files: names.iter().cloned().collect(),
        origin,
    })
}

/// Runs git in `cwd`: its output, or what it said when it failed.
fn git(cwd: &Path, args: &[&str]) -> Result<Result<Vec<u8>, String>, BreakingError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(cwd)
        .args(args)
        .output()
        .map_err(BreakingError::GitMissing)?;
    if output.status.success() {
        Ok(Ok(output.stdout))
    } else {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Ok(Err(if said.is_empty() {
            output.status.to_string()
        } else {
            said
        }))
    }
}

/// Runs git in `cwd`, any failure an error.
fn git_ok(cwd: &Path, args: &[&str]) -> Result<Vec<u8>, BreakingError> {
    git(cwd, args)?.map_err(|detail| BreakingError::Git {
        command: args.join(" "),
        detail,
    })
}

/// Where in which file.
struct Location {
    file: String,
    line: u32,
    column: u32,
    version: Version,
}

/// The location of the element at `path` in `file`; line 1, column 1 when
/// the file has no source information for it.
fn locate(file: &FileDescriptor, path: &[i32], version: Version) -> Location {
    let span = file
        .file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| Some((*l.span.first()?, *l.span.get(1)?)));
    let (line, column) = span.map_or((1, 1), |(line, column)| {
        (
            u32::try_from(line).unwrap_or(0) + 1,
            u32::try_from(column).unwrap_or(0) + 1,
        )
    });
    Location {
        file: file.name().to_owned(),
        line,
        column,
        version,
    }
}

/// The `package` statement's field number in `FileDescriptorProto`.
const PACKAGE_PATH: [i32; 1] = [2];

/// sinew's message options in one pool.
struct SinewOptions {
    event: Option<ExtensionDescriptor>,
    saga_state: Option<ExtensionDescriptor>,
}

impl SinewOptions {
    fn of(pool: &DescriptorPool) -> Self {
        Self {
            event: pool.get_extension_by_name("sinew.event"),
            saga_state: pool.get_extension_by_name("sinew.saga_state"),
        }
    }

    /// The event's subject, if the message is a `(sinew.event)`.
    fn subject(&self, message: &MessageDescriptor) -> Option<String> {
        option_text(message, self.event.as_ref()?, "subject")
    }

    /// The saga's name, if the message is a `(sinew.saga_state)`.
    fn saga(&self, message: &MessageDescriptor) -> Option<String> {
        option_text(message, self.saga_state.as_ref()?, "saga")
    }
}

/// A text field of a message-valued message option, if the option is set.
fn option_text(
    message: &MessageDescriptor,
    extension: &ExtensionDescriptor,
    field: &str,
) -> Option<String> {
    let options = message.options();
    if !options.has_extension(extension) {
        return None;
    }
    let value = options.get_extension(extension);
    Some(
        value
            .as_message()
            .and_then(|m| m.get_field_by_name(field))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    )
}

/// The saga whose stored state a message is part of.
#[derive(Clone)]
struct SagaState {
    saga: String,
    state: String,
}

/// One comparison under way.
struct Comparison<'a> {
    old: &'a Contracts,
    new: &'a Contracts,
    old_options: SinewOptions,
    new_options: SinewOptions,
    /// Old messages stored as (part of) a saga's state, by full name.
    saga_parts: HashMap<String, SagaState>,
    removed_packages: BTreeSet<String>,
    findings: Vec<Finding>,
}

impl<'a> Comparison<'a> {
    fn new(old: &'a Contracts, new: &'a Contracts) -> Self {
        let old_options = SinewOptions::of(&old.pool);
        let mut saga_parts = HashMap::new();
        for name in &old.files {
            let Some(file) = old.pool.get_file_by_name(name) else {
                continue;
            };
            for message in all_messages(&file) {
                if let Some(saga) = old_options.saga(&message) {
                    let part = SagaState {
                        saga,
                        state: message.full_name().to_owned(),
                    };
                    mark_saga_parts(&message, &part, &mut saga_parts);
                }
            }
        }
        Self {
            old,
            new,
            old_options,
            new_options: SinewOptions::of(&new.pool),
            saga_parts,
            removed_packages: BTreeSet::new(),
            findings: Vec::new(),
        }
    }

    fn push(&mut self, at: Location, rule: Rule, message: String) {
        self.findings.push(Finding {
            file: at.file,
            line: at.line,
            column: at.column,
            version: at.version,
            rule,
            message,
        });
    }

    /// A change that makes stored bytes unreadable: reported as
    /// `SAGA_STATE_CHANGED` when the message is part of a saga's state.
    fn push_stored(&mut self, at: Location, rule: Rule, owner: &str, message: String) {
        match self.saga_parts.get(owner).cloned() {
            Some(part) => {
                let holds = if part.state == owner {
                    String::new()
                } else {
                    format!(" (which holds {owner})")
                };
                self.push(
                    at,
                    Rule::SagaStateChanged,
                    format!(
                        "{message}; saga `{}` stores {}{holds}: running sagas could not be resumed",
                        part.saga, part.state
                    ),
                );
            }
            None => self.push(at, rule, message),
        }
    }

    /// Where something removed from the old file `old_file` is reported:
    /// its enclosing message in the new version, else the `package`
    /// statement of the new file of the same name, else its old place.
    fn removed_at(
        &self,
        old_file: &FileDescriptor,
        old_path: &[i32],
        parent: Option<&MessageDescriptor>,
    ) -> Location {
        if let Some(parent) = parent.and_then(|p| self.new.pool.get_message_by_name(p.full_name()))
        {
            return locate(&parent.parent_file(), parent.path(), Version::New);
        }
        match self.new.file(old_file.name()) {
            Some(file) => locate(&file, &PACKAGE_PATH, Version::New),
            None => locate(old_file, old_path, Version::Old),
        }
    }

    fn packages(&mut self) {
        let present: BTreeSet<String> = self
            .new
            .pool
            .files()
            .map(|f| f.package_name().to_owned())
            .collect();
        let mut reported = BTreeMap::new();
        for name in &self.old.files {
            let Some(file) = self.old.pool.get_file_by_name(name) else {
                continue;
            };
            let package = file.package_name();
            if !package.is_empty() && !present.contains(package) {
                reported
                    .entry(package.to_owned())
                    .or_insert_with(|| locate(&file, &PACKAGE_PATH, Version::Old));
            }
        }
        for (package, at) in reported {
            self.push(
                at,
                Rule::PackageRemoved,
                format!(
                    "package `{package}` removed: its services, messages and enums are all gone"
                ),
            );
            self.removed_packages.insert(package);
        }
    }

    fn service(&mut self, old: &ServiceDescriptor) {
        let Some(new) = self.new.pool.get_service_by_name(old.full_name()) else {
            let at = self.removed_at(&old.parent_file(), old.path(), None);
            self.push(
                at,
                Rule::ServiceRemoved,
                format!(
                    "service {} removed or renamed: its callers would get UNIMPLEMENTED",
                    old.full_name()
                ),
            );
            return;
        };
        for old_method in old.methods() {
            match new.methods().find(|m| m.name() == old_method.name()) {
                Some(new_method) => self.method(&old_method, &new_method),
                None => {
                    let at = locate(&new.parent_file(), new.path(), Version::New);
                    self.push(
                        at,
                        Rule::MethodRemoved,
                        format!(
                            "method {} of service {} removed or renamed: its callers would get UNIMPLEMENTED",
                            old_method.name(),
                            old.full_name()
                        ),
                    );
                }
            }
        }
    }

    fn method(&mut self, old: &MethodDescriptor, new: &MethodDescriptor) {
        let at = || locate(&new.parent_file(), new.path(), Version::New);
        let name = format!("/{}/{}", new.parent_service().full_name(), new.name());
        let (old_kind, new_kind) = (streaming(old), streaming(new));
        if old_kind != new_kind {
            self.push(
                at(),
                Rule::MethodStreamingChanged,
                format!("method {name} changed from {old_kind} to {new_kind}"),
            );
        }
        for (what, old_type, new_type) in [
            ("request", old.input(), new.input()),
            ("response", old.output(), new.output()),
        ] {
            if old_type.full_name() != new_type.full_name() {
                self.push(
                    at(),
                    Rule::MethodTypeChanged,
                    format!(
                        "the {what} of method {name} changed from {} to {}",
                        old_type.full_name(),
                        new_type.full_name()
                    ),
                );
            }
        }
        let (old_level, new_level) = (idempotency(old), idempotency(new));
        if idempotency_rank(new_level) < idempotency_rank(old_level) {
            self.push(
                at(),
                Rule::IdempotencyWeakened,
                format!(
                    "method {name} went from {} to {}: clients built on the old contract may still retry or hedge it",
                    idempotency_name(old_level),
                    idempotency_name(new_level)
                ),
            );
        }
    }

    fn message(&mut self, old: &MessageDescriptor) {
        if old.is_map_entry() {
            return;
        }
        let full_name = old.full_name();
        let Some(new) = self.new.pool.get_message_by_name(full_name) else {
            let at = self.removed_at(
                &old.parent_file(),
                old.path(),
                old.parent_message().as_ref(),
            );
            if let Some(saga) = self.old_options.saga(old) {
                self.push(
                    at,
                    Rule::SagaStateChanged,
                    format!(
                        "message {full_name}, the stored state of saga `{saga}`, removed or renamed: running sagas could not be resumed"
                    ),
                );
            } else if let Some(subject) = self.old_options.subject(old) {
                self.push(
                    at,
                    Rule::EventRemoved,
                    format!(
                        "event {full_name} (subject `{subject}`) removed or renamed: subscribers would stop receiving it"
                    ),
                );
            } else {
                self.push(
                    at,
                    Rule::MessageRemoved,
                    format!("message {full_name} removed or renamed"),
                );
            }
            return;
        };
        let at = || locate(&new.parent_file(), new.path(), Version::New);
        if let Some(subject) = self.old_options.subject(old) {
            match self.new_options.subject(&new) {
                None => self.push(
                    at(),
                    Rule::EventSubjectChanged,
                    format!(
                        "message {full_name} no longer declares (sinew.event): subscribers of `{subject}` would stop receiving it"
                    ),
                ),
                Some(now) if now != subject => self.push(
                    at(),
                    Rule::EventSubjectChanged,
                    format!(
                        "event {full_name} moved from subject `{subject}` to `{now}`: subscribers of `{subject}` would stop receiving it"
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(saga) = self.old_options.saga(old) {
            match self.new_options.saga(&new) {
                None => self.push(
                    at(),
                    Rule::SagaStateChanged,
                    format!(
                        "message {full_name} no longer declares (sinew.saga_state): saga `{saga}` stores it, and running sagas could not be resumed"
                    ),
                ),
                Some(now) if now != saga => self.push(
                    at(),
                    Rule::SagaStateChanged,
                    format!(
                        "the saga of state {full_name} changed from `{saga}` to `{now}`: running `{saga}` sagas could not be resumed"
                    ),
                ),
                Some(_) => {}
            }
        }
        self.fields(old, &new);
        for child in old.child_messages() {
            self.message(&child);
        }
        for child in old.child_enums() {
            self.enumeration(&child);
        }
    }

    fn fields(&mut self, old: &MessageDescriptor, new: &MessageDescriptor) {
        let owner = old.full_name();
        let old_numbers: BTreeSet<u32> = old.fields().map(|f| f.number()).collect();
        for old_field in old.fields() {
            let number = old_field.number();
            let Some(new_field) = new.get_field(number) else {
                if !new.reserved_ranges().any(|r| r.contains(&number)) {
                    let at = locate(&new.parent_file(), new.path(), Version::New);
                    self.push_stored(
                        at,
                        Rule::FieldRemoved,
                        owner,
                        format!(
                            "field {number} `{}` of {owner} removed without being reserved (add `reserved {number};`)",
                            old_field.name()
                        ),
                    );
                }
                continue;
            };
            let at = || locate(&new_field.parent_file(), new_field.path(), Version::New);
            let compatible = types_compatible(&old_field, &new_field);
            if new_field.name() != old_field.name() {
                let old_name_reserved = new.reserved_names().any(|n| n == old_field.name());
                if !compatible || old_name_reserved {
                    self.push_stored(
                        at(),
                        Rule::FieldNumberReused,
                        owner,
                        format!(
                            "field number {number} of {owner}, `{}` ({}) in the old version, is now used by `{}` ({})",
                            old_field.name(),
                            type_name(&old_field),
                            new_field.name(),
                            type_name(&new_field)
                        ),
                    );
                    continue;
                }
                self.push(
                    at(),
                    Rule::FieldRenamed,
                    format!(
                        "field {number} of {owner} renamed from `{}` to `{}`: JSON callers sending `{}` would break",
                        old_field.name(),
                        new_field.name(),
                        old_field.json_name()
                    ),
                );
            }
            if !compatible {
                self.push_stored(
                    at(),
                    Rule::FieldTypeChanged,
                    owner,
                    format!(
                        "field {number} `{}` of {owner} changed type from {} to {}, which is not wire-compatible",
                        new_field.name(),
                        type_name(&old_field),
                        type_name(&new_field)
                    ),
                );
            }
            let (old_shape, new_shape) = (shape(&old_field), shape(&new_field));
            if old_shape != new_shape {
                self.push_stored(
                    at(),
                    Rule::FieldCardinalityChanged,
                    owner,
                    format!(
                        "field {number} `{}` of {owner} changed from {old_shape} to {new_shape}",
                        new_field.name()
                    ),
                );
            } else if let Some(change) = oneof_change(&old_field, &new_field, old) {
                self.push_stored(
                    at(),
                    Rule::FieldCardinalityChanged,
                    owner,
                    format!("field {number} `{}` of {owner} {change}", new_field.name()),
                );
            }
        }
        for new_field in new.fields() {
            let number = new_field.number();
            if !old_numbers.contains(&number) && old.reserved_ranges().any(|r| r.contains(&number))
            {
                let at = locate(&new_field.parent_file(), new_field.path(), Version::New);
                self.push_stored(
                    at,
                    Rule::FieldNumberReused,
                    owner,
                    format!(
                        "field number {number} of {owner} was reserved in the old version and is now used by `{}`",
                        new_field.name()
                    ),
                );
            }
        }
    }

    fn enumeration(&mut self, old: &EnumDescriptor) {
        let full_name = old.full_name();
        let Some(new) = self.new.pool.get_enum_by_name(full_name) else {
            let at = self.removed_at(
                &old.parent_file(),
                old.path(),
                old.parent_message().as_ref(),
            );
            self.push(
                at,
                Rule::EnumRemoved,
                format!("enum {full_name} removed or renamed"),
            );
            return;
        };
        for old_value in old.values() {
            let (name, number) = (old_value.name(), old_value.number());
            if let Some(new_value) = new.get_value_by_name(name) {
                if new_value.number() != number {
                    let at = locate(&new.parent_file(), new_value.path(), Version::New);
                    self.push(
                        at,
                        Rule::EnumValueNumberChanged,
                        format!(
                            "enum value {name} of {full_name} changed number from {number} to {}",
                            new_value.number()
                        ),
                    );
                }
                continue;
            }
            let reserved = new.reserved_ranges().any(|r| r.contains(&number))
                || new.reserved_names().any(|n| n == name);
            if reserved {
                continue;
            }
            match new.get_value(number) {
                Some(renamed) => {
                    let at = locate(&new.parent_file(), renamed.path(), Version::New);
                    self.push(
                        at,
                        Rule::EnumValueRemoved,
                        format!(
                            "enum value {name} ({number}) of {full_name} removed or renamed to {}: JSON callers sending `{name}` would break",
                            renamed.name()
                        ),
                    );
                }
                None => {
                    let at = locate(&new.parent_file(), new.path(), Version::New);
                    self.push(
                        at,
                        Rule::EnumValueRemoved,
                        format!(
                            "enum value {name} ({number}) of {full_name} removed without its number being reserved (add `reserved {number};`)"
                        ),
                    );
                }
            }
        }
    }
}

/// Every message of a file, nested ones included.
fn all_messages(file: &FileDescriptor) -> Vec<MessageDescriptor> {
    let mut found = Vec::new();
    let mut pending: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(message) = pending.pop() {
        pending.extend(message.child_messages());
        found.push(message);
    }
    found
}

/// Marks `message` and every message its fields use, recursively, as part
/// of the saga state `part`.
fn mark_saga_parts(
    message: &MessageDescriptor,
    part: &SagaState,
    parts: &mut HashMap<String, SagaState>,
) {
    let mut pending = vec![message.clone()];
    while let Some(message) = pending.pop() {
        if parts.contains_key(message.full_name()) {
            continue;
        }
        parts.insert(message.full_name().to_owned(), part.clone());
        for field in message.fields() {
            if let Kind::Message(used) = field.kind() {
                pending.push(used);
            }
        }
    }
}

/// The wire families whose members read each other's bytes.
#[derive(Debug, PartialEq, Eq)]
enum WireFamily {
    Varint,
    ZigZag,
    Fixed32,
    Fixed64,
    Float,
    Double,
    Bytes,
    Message(String),
    Enum(String),
}

fn wire_family(kind: &Kind) -> WireFamily {
    match kind {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool => WireFamily::Varint,
        Kind::Sint32 | Kind::Sint64 => WireFamily::ZigZag,
        Kind::Fixed32 | Kind::Sfixed32 => WireFamily::Fixed32,
        Kind::Fixed64 | Kind::Sfixed64 => WireFamily::Fixed64,
        Kind::Float => WireFamily::Float,
        Kind::Double => WireFamily::Double,
        Kind::String | Kind::Bytes => WireFamily::Bytes,
        Kind::Message(message) => WireFamily::Message(message.full_name().to_owned()),
        Kind::Enum(enumeration) => WireFamily::Enum(enumeration.full_name().to_owned()),
    }
}

/// Whether a value of kind `old` reads as kind `new` (and back).
fn kinds_compatible(old: &Kind, new: &Kind) -> bool {
    match (wire_family(old), wire_family(new)) {
        (WireFamily::Enum(_), WireFamily::Varint) | (WireFamily::Varint, WireFamily::Enum(_)) => {
            true
        }
        (a, b) => a == b,
    }
}

/// Whether two fields on the same number have compatible types; a map
/// against a non-map is left to the cardinality check.
fn types_compatible(old: &FieldDescriptor, new: &FieldDescriptor) -> bool {
    match (map_entry(old), map_entry(new)) {
        (Some(old), Some(new)) => {
            kinds_compatible(
                &old.map_entry_key_field().kind(),
                &new.map_entry_key_field().kind(),
            ) && kinds_compatible(
                &old.map_entry_value_field().kind(),
                &new.map_entry_value_field().kind(),
            )
        }
        (None, None) => kinds_compatible(&old.kind(), &new.kind()),
        _ => true,
    }
}

fn map_entry(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(entry) if field.is_map() => Some(entry),
        _ => None,
    }
}

/// A field's type as written in a contract.
fn type_name(field: &FieldDescriptor) -> String {
    fn kind_name(kind: &Kind) -> String {
        match kind {
            Kind::Message(message) => message.full_name().to_owned(),
            Kind::Enum(enumeration) => enumeration.full_name().to_owned(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
    match map_entry(field) {
        Some(entry) => format!(
            "map<{}, {}>",
            kind_name(&entry.map_entry_key_field().kind()),
            kind_name(&entry.map_entry_value_field().kind())
        ),
        None if field.is_list() => format!("repeated {}", kind_name(&field.kind())),
        None => kind_name(&field.kind()),
    }
}

/// Singular, repeated or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Singular,
    Repeated,
    Map,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Singular => "singular",
            Shape::Repeated => "repeated",
            Shape::Map => "a map",
        })
    }
}

fn shape(field: &FieldDescriptor) -> Shape {
    if field.is_map() {
        Shape::Map
    } else if field.is_list() {
        Shape::Repeated
    } else {
        Shape::Singular
    }
}

/// The oneof a field is in, proto3 `optional`'s synthetic ones aside.
fn real_oneof(field: &FieldDescriptor) -> Option<OneofDescriptor> {
    field.containing_oneof().filter(|o| !o.is_synthetic())
}

/// How a field's oneof membership changed in a way that breaks: out of a
/// oneof, or into one holding another field that already existed outside
/// the field's old oneof.
fn oneof_change(
    old_field: &FieldDescriptor,
    new_field: &FieldDescriptor,
    old_message: &MessageDescriptor,
) -> Option<String> {
    let old_oneof = real_oneof(old_field);
    let new_oneof = real_oneof(new_field);
    match (old_oneof, new_oneof) {
        (Some(old), None) => Some(format!("moved out of oneof `{}`", old.name())),
        (old, Some(new)) => {
            let number = new_field.number();
            let old_group: BTreeSet<u32> = old
                .as_ref()
                .map(|o| o.fields().map(|f| f.number()).collect())
                .unwrap_or_default();
            let joined: Vec<FieldDescriptor> = new
                .fields()
                .filter(|f| f.number() != number && !old_group.contains(&f.number()))
                .filter_map(|f| old_message.get_field(f.number()))
                .collect();
            // Two oneofs merged: every member was in a oneof before, so
            // only the lowest-numbered one reports it.
            let report = match old {
                None => !joined.is_empty(),
                Some(_) => joined
                    .iter()
                    .any(|f| real_oneof(f).is_some() && f.number() > number),
            };
            report.then(|| {
                let names: Vec<String> = joined.iter().map(|f| format!("`{}`", f.name())).collect();
                format!(
                    "moved into oneof `{}` together with {}, which existed outside it: setting one now clears the other",
                    new.name(),
                    names.join(", ")
                )
            })
        }
        (None, None) => None,
    }
}

/// Unary, client, server or bidirectional streaming.
fn streaming(method: &MethodDescriptor) -> &'static str {
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => "unary",
        (true, false) => "client streaming",
        (false, true) => "server streaming",
        (true, true) => "bidirectional streaming",
    }
}

/// The method's `idempotency_level` (MethodOptions field 34): 0 unknown,
/// 1 NO_SIDE_EFFECTS, 2 IDEMPOTENT.
fn idempotency(method: &MethodDescriptor) -> i32 {
    method
        .options()
        .get_field_by_name("idempotency_level")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0)
}

/// The level's strength: unknown < IDEMPOTENT < NO_SIDE_EFFECTS.
fn idempotency_rank(level: i32) -> u8 {
    match level {
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

fn idempotency_name(level: i32) -> &'static str {
    match level {
        1 => "NO_SIDE_EFFECTS",
        2 => "IDEMPOTENT",
        _ => "IDEMPOTENCY_UNKNOWN",
    }
}

#[cfg(test)]
mod tests;
