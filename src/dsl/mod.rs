//! The workflow language: pest grammar binding, AST with spans, validation, and compilation
//! into [`crate::workflow::Workflow`].
