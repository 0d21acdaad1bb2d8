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

use super::deliveries::DeliveryRow;
use super::journal::JournalRow;
use super::repos::RepoRow;
use super::steps::StepRow;
use crate::domain::{DeliveryId, Phase, RepoName, Source, State, StepState, TaskKey};

/// Stored as `$inner` (a value of `$t` turned into it with `$to`, read back with `$from`).
macro_rules! stored_as {
    ($t:ty, $inner:ty, |$v:ident| $to:expr, |$s:ident| $from:expr) => {
        impl<DB: Database> Type<DB> for $t
        where
            $inner: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <$inner as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <$inner as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            $inner: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <$inner as Encode<'q, DB>>::encode_by_ref(&$to, buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            $inner: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <$inner as Decode<'r, DB>>::decode(value)?;
                $from
            }
        }
    };
}

/// An enum of `domain` stored as its text; text it does not know is an error naming it.
macro_rules! stored_as_text {
    ($($t:ident),*) => {$(
        stored_as!($t, String, |v| v.as_str().to_string(), |s| {
            $t::parse(&s).ok_or_else(|| {
                format!(concat!("unknown ", stringify!($t), " `{}` in the store"), s).into()
            })
        });
    )*};
}

stored_as_text!(Phase, State, StepState, Source);
stored_as!(DeliveryId, i64, |v| v.0, |n| Ok(DeliveryId(n)));
stored_as!(TaskKey, String, |v| v.as_str().to_string(), |s| Ok(
    TaskKey::new(s)
));
stored_as!(RepoName, String, |v| v.as_str().to_string(), |s| Ok(
    RepoName::new(s)
));

/// A row read column by column, by the field's name, on either backend.
macro_rules! from_row {
    ($t:ident { $($field:ident),* $(,)? }) => {
        from_row!(@one sqlx::sqlite::SqliteRow, $t { $($field),* });
        from_row!(@one sqlx::postgres::PgRow, $t { $($field),* });
    };
    (@one $row:ty, $t:ident { $($field:ident),* }) => {
        impl<'r> sqlx::FromRow<'r, $row> for $t {
            fn from_row(row: &'r $row) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok($t { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
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
    phase,
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
