"""The catalog: the one door to the database (:mod:`.store`), its backends (:mod:`.backends`), schema and migrations (:mod:`.schema`) and the filter grammar (:mod:`.query`)."""
