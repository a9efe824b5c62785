module github.com/heraldhq/herald/services/contacts

go 1.26.8
