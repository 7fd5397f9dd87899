//! Fleet mode: many appliances behind one PCAPs API, coordinated by etcd.
pub mod rules;
