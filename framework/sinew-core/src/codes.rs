//! Canonical gRPC status code names, as the service config and the fault
//! spec write them.

use tonic::Code;

/// Every code by number, with its canonical name (`google.rpc.Code`).
const NAMES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "CANCELLED"),
    (Code::Unknown, "UNKNOWN"),
    (Code::InvalidArgument, "INVALID_ARGUMENT"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Code::NotFound, "NOT_FOUND"),
    (Code::AlreadyExists, "ALREADY_EXISTS"),
    (Code::PermissionDenied, "PERMISSION_DENIED"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION"),
    (Code::Aborted, "ABORTED"),
    (Code::OutOfRange, "OUT_OF_RANGE"),
    (Code::Unimplemented, "UNIMPLEMENTED"),
    (Code::Internal, "INTERNAL"),
    (Code::Unavailable, "UNAVAILABLE"),
    (Code::DataLoss, "DATA_LOSS"),
    (Code::Unauthenticated, "UNAUTHENTICATED"),
];

/// The code with canonical name `name`, in any case (`"UNAVAILABLE"`,
/// `"unavailable"`). Only the canonical spellings: not `"CANCELED"`.
pub fn code_from_name(name: &str) -> Option<Code> {
    NAMES
        .iter()
        .find(|(_, canonical)| canonical.eq_ignore_ascii_case(name))
        .map(|(code, _)| *code)
}

/// The code numbered `number`, if it is one of the 17 (0 to 16).
pub fn code_from_number(number: u64) -> Option<Code> {
    NAMES
        .get(usize::try_from(number).ok()?)
        .map(|(code, _)| *code)
}

/// The canonical name of `code`, such as `"UNAVAILABLE"`.
pub fn code_name(code: Code) -> &'static str {
    NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("UNKNOWN", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_number_order() {
        for (number, (code, _)) in NAMES.iter().enumerate() {
            assert_eq!(*code as usize, number);
        }
    }

    #[test]
    fn names_and_numbers_round_trip() {
        for number in 0..=16 {
            let code = code_from_number(number).unwrap();
            assert_eq!(code_from_name(code_name(code)), Some(code));
        }
        assert_eq!(code_from_number(17), None);
        assert_eq!(code_from_name("unavailable"), Some(Code::Unavailable));
        assert_eq!(code_from_name("CANCELED"), None);
        assert_eq!(code_from_name(""), None);
    }
}
