//! ACPI tables (to be written).
