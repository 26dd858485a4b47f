//! The rule table: a validated config plus its compiled matcher, swapped whole on reload.
