//! Buckets: destinations (`s3://`, `gs://`), the object stores behind them, ownership
//! challenges, and the durable upload queue of full captures.
pub mod destination;
pub mod ownership;
pub mod stores;
pub mod uploader;
