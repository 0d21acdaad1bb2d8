//! How the domain's values and the store's rows cross into SQL, on both backends.
//!
//! Written out here rather than derived: sqlx's derives come with its `macros` feature, which
//! compiles both drivers and SQLite's C a second time for the proc-macro host. What they
//! would generate is small: the enums of `domain` are stored as their text (`as_str`, read
//! back with `parse`), the newtypes as the number or text inside, and a row is its columns
//! read by name.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use super::autotests::AutotestRow;
use super::deliveries::DeliveryRow;
use super::journal::JournalRow;
use super::repos::RepoRow;
use super::steps::StepRow;
use crate::domain::{
    AutotestState, DeliveryId, Event, Phase, RepoName, Source, Stage, State, StepState, TaskKey,
};

/// Stored as its text (`as_str`), read back by `$read` from the text `$s`.
macro_rules! stored_as_text {
    ($t:ident, |$s:ident| $read:expr) => {
        impl<DB: Database> Type<DB> for $t
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            for<'a> &'a str: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s: &str = <&'r str as Decode<'r, DB>>::decode(value)?;
                $read
            }
        }
    };
}

/// Text an enum does not know, named in the error: the derive's behaviour.
fn unknown(what: &str, text: &str) -> BoxDynError {
    format!("unknown {what} `{text}` in the store").into()
}

stored_as_text!(Phase, |s| Phase::parse(s)
    .ok_or_else(|| unknown("phase", s)));
stored_as_text!(State, |s| State::parse(s)
    .ok_or_else(|| unknown("state", s)));
stored_as_text!(StepState, |s| {
    StepState::parse(s).ok_or_else(|| unknown("step state", s))
});
stored_as_text!(AutotestState, |s| {
    AutotestState::parse(s).ok_or_else(|| unknown("autotest state", s))
});
stored_as_text!(Source, |s| Source::parse(s)
    .ok_or_else(|| unknown("source", s)));
// A journal entry this version does not know reads back as `Other`: one old entry must not
// make the whole journal unreadable.
stored_as_text!(Stage, |s| Ok(Stage::parse(s)));
stored_as_text!(Event, |s| Ok(Event::parse(s)));
stored_as_text!(TaskKey, |s| Ok(TaskKey::new(s)));
stored_as_text!(RepoName, |s| Ok(RepoName::new(s)));

impl<DB: Database> Type<DB> for DeliveryId
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for DeliveryId
where
    i64: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, DB>>::encode(self.0, buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for DeliveryId
where
    i64: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DeliveryId(<i64 as Decode<'r, DB>>::decode(value)?))
    }
}

/// A row read column by column, on either backend: a field by its own name, or by the
/// column's given as `field: "column"`.
macro_rules! from_row {
    ($t:ident { $($field:ident $(: $column:literal)?),* $(,)? }) => {
        from_row!(@one sqlx::sqlite::SqliteRow, $t { $($field $(: $column)?),* });
        from_row!(@one sqlx::postgres::PgRow, $t { $($field $(: $column)?),* });
    };
    (@one $row:ty, $t:ident { $($field:ident $(: $column:literal)?),* }) => {
        impl<'r> sqlx::FromRow<'r, $row> for $t {
            fn from_row(row: &'r $row) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok($t { $($field: row.try_get(from_row!(@column $field $($column)?))?),* })
            }
        }
    };
    (@column $field:ident) => { stringify!($field) };
    (@column $field:ident $column:literal) => { $column };
}

from_row!(DeliveryRow {
    id,
    task,
    state,
    phase,
    priority,
    source,
    requester,
    origin,
    created_at,
    started_at,
    finished_at,
    error,
    cancel,
    candidate,
    held,
    built_on,
    discards,
});
from_row!(JournalRow {
    at,
    stage: "phase",
    repo,
    event,
    detail
});
from_row!(StepRow {
    id,
    repo,
    step,
    started_at,
    finished_at,
    exit_code,
    outcome,
    log_path,
    pid,
    runner_build,
});
from_row!(RepoRow {
    repo,
    position,
    branch,
    branch_sha,
    base_sha,
    rebased_sha,
    deployed,
    merged,
    rolled_back,
});
from_row!(AutotestRow {
    id,
    task,
    repo,
    branch,
    sha,
    source,
    requester,
    state,
    rebased_on,
    tested_sha,
    step,
    reason,
    log,
    pid,
    requested_at,
    started_at,
    finished_at,
    runner_build,
});
