package fcm

// OutcomeRows returns the names of the outcome table's rows, in order, so that the table test
// can check that it covers every one.
func OutcomeRows() []string {
	rows := make([]string, len(outcomeTable))
	for i, r := range outcomeTable {
		rows[i] = r.row
	}
	return rows
}
