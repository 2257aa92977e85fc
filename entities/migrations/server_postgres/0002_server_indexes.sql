-- Written by `cargo xtask migrations` from the entities. Do not edit by hand.
DROP INDEX IF EXISTS "profile_addons_ref_profile_id";
DROP INDEX IF EXISTS "profile_addons_ref_settings_profile_id";
DROP INDEX IF EXISTS "stream_settings_ref_profile_id";
DROP INDEX IF EXISTS "appearance_settings_ref_settings_profile_id";
DROP INDEX IF EXISTS "watch_history_ref_profile_id";
DROP INDEX IF EXISTS "lists_ref_profile_id";
DROP INDEX IF EXISTS "list_items_ref_list_id";
